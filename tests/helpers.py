"""Small assertions shared by several test modules."""

from __future__ import annotations


def one_line_error(capsys) -> str:
    """What a failed command wrote to stderr, asserted to be one line and no traceback."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    return err
