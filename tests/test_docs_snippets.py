"""Every ```python block of docs/rl_tutorial.md runs, in order, in one namespace; and the module
map of docs/architecture.md lists exactly the library's modules.

The tutorial promises that its code works as written; this test keeps that promise. Blocks are
compiled with their line numbers in the Markdown file, so a failure points at the doc line.
``RL_SCANIQA_HOME`` points at an empty temporary folder, and the test checks that the snippets
left it empty (they use ``random_feature_cache`` and never generate data).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TUTORIAL = REPO / "docs" / "rl_tutorial.md"
ARCHITECTURE = REPO / "docs" / "architecture.md"
README = REPO / "README.md"
# A block opens with ```python on its own line and closes with ``` on its own line.
BLOCK = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)
#: The tutorial must stay a quick read-and-run; the whole file finishes well within this.
TIME_LIMIT_S = 60.0


def python_blocks(path: Path = TUTORIAL) -> list[tuple[int, str]]:
    """``(first code line number, code)`` of every ```python block, in file order."""
    text = path.read_text(encoding="utf-8")
    return [(text.count("\n", 0, match.start(1)) + 1, match.group(1))
            for match in BLOCK.finditer(text)]


def test_tutorial_has_its_snippets():
    blocks = python_blocks()
    assert len(blocks) >= 8
    code = "\n".join(source for _, source in blocks)
    for name in ("gym.make(\"Panorama360Env-v0\"", "MaskablePPO", "ScanpathPolicy", "run_agent",
                 "score_scanpaths", "SeededPolicyAgent", "AssessorRewardWrapper",
                 "AssessorRewardVecWrapper", "action_mask"):
        assert name in code, f"the tutorial no longer shows {name}"


def test_tutorial_snippets_run(tmp_path, monkeypatch, capsys):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("RL_SCANIQA_HOME", str(home))
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "rl_tutorial"}
    started = time.perf_counter()
    for first_line, source in python_blocks():
        # Leading newlines make the code's line numbers those of the Markdown file, so a
        # traceback shows the failing line of docs/rl_tutorial.md itself.
        code = compile("\n" * (first_line - 1) + source, str(TUTORIAL), "exec")
        exec(code, namespace)  # noqa: S102 -- running the documented code is the point
    elapsed = time.perf_counter() - started
    assert elapsed < TIME_LIMIT_S, f"tutorial snippets took {elapsed:.0f} s"
    assert not any(home.iterdir()), "the tutorial snippets should not generate data"
    assert "Discrete(32)" in capsys.readouterr().out


def readme_env_snippet() -> str:
    """The README's "Use the environment" code block, as a user would copy it."""
    text = README.read_text(encoding="utf-8")
    block = BLOCK.search(text, text.index("## Use the environment"))
    assert block is not None, "README.md lost its environment snippet"
    return block.group(1)


@pytest.mark.slow
@pytest.mark.parametrize("how", ["script", "stdin"])
@pytest.mark.parametrize("data", ["shipped", "built"])
def test_readme_snippet_runs_unguarded_on_an_empty_home(tmp_path, how, data):
    # No `if __name__ == "__main__":` guard, as most people write it. With default arguments
    # gym.make only loads the shipped cache; with a cache_dir it builds the default data, and
    # that build must not start worker processes that re-run this script (they would wait
    # forever on the data lock the parent holds, or fail to re-import stdin).
    snippet = readme_env_snippet()
    call = 'gym.make("Panorama360Env-v0")'
    assert call in snippet
    home, cache = tmp_path / "home", tmp_path / "cache"
    if data == "built":
        snippet = snippet.replace(call, f'gym.make("Panorama360Env-v0", cache_dir={str(cache)!r})')
    env = {**os.environ, "RL_SCANIQA_HOME": str(home)}
    if how == "script":
        script = tmp_path / "t.py"
        script.write_text(snippet + "print('stepped', reward)\n")
        command, stdin = [sys.executable, str(script)], None
    else:
        command, stdin = [sys.executable, "-"], snippet + "print('stepped', reward)\n"
    done = subprocess.run(command, input=stdin, env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "stepped" in done.stdout
    if data == "shipped":
        assert not home.exists() or not any(home.iterdir()), "the shipped cache should be loaded, not built"
    else:
        assert (home / "synth360-quick" / "labels.csv").is_file()
        assert any(cache.glob("*.safetensors")), "the cache should have been built in cache_dir"


def module_map_files(path: Path = ARCHITECTURE) -> list[str]:
    """Files in the "Module map" table's first column (``c.py`` after ``a/b.py``: ``a/c.py``)."""
    text = path.read_text(encoding="utf-8")
    files = []
    for line in text[text.index("## Module map"):].splitlines():
        if not line.startswith("| `"):
            continue
        folder = ""
        for name in re.findall(r"`([^`]+\.py)`", line.split(" | ")[0]):
            if "/" in name:
                folder = name.rpartition("/")[0]
                files.append(name)
            else:
                files.append(f"{folder}/{name}")
    return files


def test_architecture_module_map_matches_the_tree():
    listed = module_map_files()
    missing = sorted(name for name in listed if not (REPO / name).is_file())
    assert not missing, f"docs/architecture.md lists files that do not exist: {missing}"
    library = {path.relative_to(REPO).as_posix() for folder in ("envs", "agents", "assessor")
               for path in (REPO / folder).rglob("*.py")}
    unlisted = sorted(library - set(listed))
    assert not unlisted, f"docs/architecture.md's module map misses: {unlisted}"
