"""`rgnet-hf --help` and every `rgnet-hf SUB --help` answer without importing torch or transformers."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from rgnet_hf.apps.cli import COMMANDS


def test_help_imports_neither_torch_nor_transformers():
    script = textwrap.dedent(
        f"""
        import contextlib, io, sys
        from rgnet_hf.apps.cli import main
        for argv in [["--help"]] + [[name, "--help"] for name in {list(COMMANDS)!r}]:
            with contextlib.redirect_stdout(io.StringIO()) as out:
                try:
                    main(argv)
                except SystemExit as exit:
                    assert exit.code == 0, (argv, exit.code)
            assert "usage: rgnet-hf" in out.getvalue(), (argv, out.getvalue())
        heavy = sorted(name for name in sys.modules if name.split(".")[0] in ("torch", "transformers"))
        print("HEAVY", heavy[:10])
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "HEAVY []" in result.stdout, result.stdout


def test_a_launched_command_shuts_its_process_group_down(tmp_path):
    import torch.distributed as dist

    from rgnet_hf.apps.cli import shut_down_process_group

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    assert dist.is_initialized()
    shut_down_process_group()
    assert not dist.is_initialized()
    shut_down_process_group()  # nothing to shut down: no error
