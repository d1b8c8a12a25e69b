"""Test-session settings: the reproducible CPU paths, pinned before torch and numpy load (the
synthetic fits refuse to run without them: `smartclip.reproducible`), and one BLAS/OpenMP thread
per test process (pytest-xdist runs one process per core; nested thread pools oversubscribe the
cores and slow kernel ridge fits tens of times)."""

from smartclip.reproducible import pin

pin("avx2")

from collections.abc import Callable, Sequence  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

torch.set_num_threads(1)
threadpool_limits(1)


@pytest.fixture
def one_line_error(capsys) -> Callable[[Callable, Sequence[str], str], None]:
    """check(main, argv, text): `main(argv)` exits with status 2 and one stderr line with text."""

    def check(main: Callable, argv: Sequence[str], text: str) -> None:
        with pytest.raises(SystemExit) as info:
            main(list(argv))
        assert info.value.code == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and text in lines[0], lines

    return check
