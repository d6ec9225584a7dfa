"""How the ``pinqi`` command answers (issue #13 item 7): one error line and status 2, ``-v`` on
either side of the verb, output folders checked first, config errors naming key and allowed values,
defaults and an example in every ``--help``, Ctrl-C and OSError in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pinqi.cli import build_parser, main
from pinqi.cli import commands

VERBS = ("simulate", "train", "evaluate", "demo", "map", "reconstruct")


def _one_error_line(capsys: pytest.CaptureFixture[str], verb: str) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"pinqi {verb}: error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("verb", VERBS)
def test_help_shows_defaults_and_an_example(verb: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([verb, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "example: pinqi " + verb in out
    assert "(default: " in out
    assert "-v, --verbose" in out


def test_argument_errors_are_one_line_with_status_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["simulate", "--size", "0"])
    assert exit_info.value.code == 2
    line = _one_error_line(capsys, "simulate")
    assert "--size: must be >= 1; got 0" in line
    with pytest.raises(SystemExit):
        main(["evaluate", "ckpt.pt", "--data", "d.h5", "--batch-size", "0"])
    assert "--batch-size: must be >= 1" in _one_error_line(capsys, "evaluate")


def test_verbose_works_after_the_verb_and_shows_the_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = build_parser().parse_args(["evaluate", "x.pt", "--data", "d.h5", "-v"])
    assert args.verbose is True
    assert build_parser().parse_args(["-v", "evaluate", "x.pt", "--data", "d.h5"]).verbose is True
    assert main(["evaluate", str(tmp_path / "missing.pt"), "--data", "d.h5", "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in _one_error_line(capsys, "evaluate")
    assert main(["evaluate", str(tmp_path / "missing.pt"), "--data", "d.h5", "--out", str(tmp_path / "o"), "-v"]) == 2
    assert "Traceback" in capsys.readouterr().err


@pytest.mark.parametrize("verb_args", [["simulate"], ["evaluate", "c.pt", "--data", "d.h5"], ["train"],
                                       ["reconstruct", "raw.h5"], ["map", "--t1w", "a.nii"], ["demo"]])
def test_out_pointing_at_a_file_is_refused_before_any_work(verb_args: list[str], tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "a_file"
    target.write_text("keep me")
    assert main([*verb_args, "--out", str(target)]) == 2
    assert f"--out {target} exists and is not a folder" in _one_error_line(capsys, verb_args[0])
    assert target.read_text() == "keep me"


def test_config_errors_name_the_key_and_what_is_allowed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "c.json"
    cases = {
        '{"stepz": 3}': "unknown key 'stepz'; allowed keys: acceleration,",
        '{"model": {"fit_mode": "newton"}}': "fit_mode must be one of 'implicit'",
        '{"batch_size": 0}': "batch_size must be an integer >= 1; got 0",
        '{"checkpoint_every": 0}': "checkpoint_every must be an integer >= 1; got 0",
        '{"model": {"n_iterations": "3"}}': 'model.n_iterations must be an integer (the preset has',
        "[1, 2]": "must be a JSON object; got a list",
        "{not json": "is not valid JSON",
    }
    for text, message in cases.items():
        config.write_text(text)
        assert main(["train", "--config", str(config), "--out", str(tmp_path / "run")]) == 2
        line = _one_error_line(capsys, "train")
        assert message in line and str(config) in line, line
    assert main(["train", "--preset", "huge", "--out", str(tmp_path / "run")]) == 2
    assert "allowed: cpu, gpu, micro, paper, ship" in _one_error_line(capsys, "train")
    for text, message in {'{"batch_size": 0}': "batch_size must be an integer >= 1; got 0",
                          "[1]": "must be a JSON object; got a list",
                          '{"model": {"zzz": 1}}': "unknown key 'model.zzz'; allowed keys"}.items():
        config.write_text(text)
        assert main(["train", "--task", "w2q", "--config", str(config), "--out", str(tmp_path / "w2q")]) == 2
        assert message in _one_error_line(capsys, "train")


def test_interrupt_exits_130_and_os_errors_are_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    def interrupted(args: object) -> None:
        raise KeyboardInterrupt

    def disk_full(args: object) -> None:
        raise OSError(28, "No space left on device", str(tmp_path / "test.h5"))

    def bug(args: object) -> None:
        raise RuntimeError("something internal")

    monkeypatch.setattr(commands, "simulate", interrupted)
    assert main(["simulate", "--out", str(tmp_path)]) == 130
    assert capsys.readouterr().err.strip() == "pinqi simulate: interrupted"
    monkeypatch.setattr(commands, "simulate", disk_full)
    assert main(["simulate", "--out", str(tmp_path)]) == 2
    assert _one_error_line(capsys, "simulate").endswith(f"No space left on device: {tmp_path / 'test.h5'}")
    monkeypatch.setattr(commands, "simulate", bug)
    assert main(["simulate", "--out", str(tmp_path)]) == 2
    assert "RuntimeError: something internal (run with -v for the traceback)" in _one_error_line(capsys, "simulate")


def test_simulate_writes_its_files_together_and_leaves_nothing_after_a_failure(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["simulate", "--out", str(tmp_path), "--anatomy", "phantom", "--size", "16", "--coils", "2",
            "--n-per-acceleration", "1", "--accelerations", "2", "--splits", "val", "test"]
    assert main(argv) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["test.h5", "val.h5"]
    fresh = tmp_path / "fresh"
    import simulation.h5io as h5io

    calls = []

    def fail_second(dataset: object, path: object, attrs: object = None) -> None:
        calls.append(path)
        if len(calls) == 2:
            raise OSError(28, "No space left on device", str(path))
        Path(str(path)).write_bytes(b"x")

    monkeypatch.setattr(h5io, "write_t1_dataset_h5", fail_second)
    assert main([*argv[:2], str(fresh), *argv[3:]]) == 2
    assert "No space left on device" in _one_error_line(capsys, "simulate")
    assert list(fresh.iterdir()) == []


def test_simulate_refuses_millisecond_times(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "--out", str(tmp_path), "--times", "500", "1000"]) == 2
    assert "looks like milliseconds" in _one_error_line(capsys, "simulate")
    assert not any(tmp_path.iterdir())


def test_evaluate_writes_through_an_output_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No fixed temporary name: a planted '.maps.tmp.png' symlink is never written through."""
    victim = tmp_path / "victim.txt"
    victim.write_text("untouched")
    out = tmp_path / "eval"
    out.mkdir()
    (out / ".maps.tmp.png").symlink_to(victim)
    data = tmp_path / "data"
    assert main(["simulate", "--out", str(data), "--anatomy", "phantom", "--size", "16", "--coils", "2",
                 "--n-per-acceleration", "1", "--accelerations", "2", "--splits", "test"]) == 0
    results = commands.run_evaluation(None, data / "test.h5", out, ["cg-sense"], batch_size=1)
    assert "CG-SENSE + fit" in results
    assert victim.read_text() == "untouched"
    names = sorted(p.name for p in out.iterdir())
    assert names == [".maps.tmp.png", "maps.png", "metrics.json", "metrics.md"]
    assert json.loads((out / "metrics.json").read_text())["checkpoint"] == "None"
