"""The documentation site: it builds with ``mkdocs build --strict`` (no broken link or anchor, no
docstring reference that cannot be found), and the Python examples of the guide run as written.

Convention: every ```` ```python ```` block of a page under ``docs/`` runs, in order, in one namespace
per page, in a scratch working directory, unless its first line is ``# not run``. Shell examples are
``bash`` blocks and are not run here (the CLI tests run the commands).
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
FENCE = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)
NOT_RUN = "# not run"


def python_blocks(page: Path) -> list[str]:
    return [b for b in FENCE.findall(page.read_text()) if not b.startswith(NOT_RUN)]


def guide_pages() -> list[Path]:
    return sorted(p for p in DOCS.rglob("*.md") if "api" not in p.relative_to(DOCS).parts)


def test_site_builds_strict(tmp_path):
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"),
                           "-d", str(tmp_path / "site")], cwd=ROOT, env=env, capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    for page in ("index", "getting-started", "algorithm", "api/core"):
        assert (tmp_path / "site" / page / "index.html").is_file() or (tmp_path / "site" / f"{page}.html").is_file()
    # the settings table is made from PPOConfig at build time: every field is on the page
    import dataclasses

    from purejaxppo.core.config import PPOConfig

    html = (tmp_path / "site" / "algorithm" / "index.html").read_text()
    missing = [f.name for f in dataclasses.fields(PPOConfig) if f"<code>{f.name}</code>" not in html]
    assert not missing, missing


def test_strict_build_catches_a_broken_anchor(tmp_path):
    """The check above would catch a link to a section that does not exist (not only to a missing page)."""
    pytest.importorskip("mkdocs")
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "index.md").write_text("# Home\n\nSee [there](other.md#no-such-section).\n")
    (docs / "other.md").write_text("# Other\n")
    yml = (ROOT / "mkdocs.yml").read_text()
    validation = yml[yml.index("validation:"):]
    (tmp_path / "mkdocs.yml").write_text(f"site_name: t\ndocs_dir: docs\nstrict: true\n{validation}")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
                          cwd=tmp_path, env=dict(os.environ, NO_MKDOCS_2_WARNING="1"), capture_output=True, text=True,
                          check=False)
    assert done.returncode != 0 and "no-such-section" in done.stdout + done.stderr


def test_guide_has_runnable_examples():
    runnable = {p.name: len(python_blocks(p)) for p in guide_pages()}
    assert runnable["getting-started.md"] >= 1 and runnable["sweeps.md"] >= 1 and runnable["long-runs.md"] >= 1


@pytest.mark.parametrize("page", [p.relative_to(DOCS).as_posix() for p in guide_pages() if python_blocks(p)])
def test_guide_examples_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples write runs/... here, never into the repository
    import gymnax

    import purejaxppo.envs  # noqa: F401  (registers purejaxppo's own environments before the snapshot)

    registry, names = dict(gymnax.registration._registry), list(gymnax.registered_envs)
    namespace = {"__name__": "__docs__"}
    try:
        for i, block in enumerate(python_blocks(DOCS / page)):
            code = compile(block, f"{page} (python block {i + 1})", "exec")
            exec(code, namespace)
    finally:  # an example's register_env("MyEnv-v0", ...) would stay in gymnax's lists for the later tests
        gymnax.registration._registry.clear()
        gymnax.registration._registry.update(registry)
        gymnax.registered_envs[:] = names


README = ROOT / "README.md"


def test_readme_is_short_and_its_links_exist():
    text = README.read_text()
    assert len(text.splitlines()) <= 250
    links = re.findall(r"\]\(((?!https?://)[^)#]+)(?:#[^)]*)?\)", text)
    assert any(link.startswith("docs/") for link in links)
    missing = [link for link in links if not (ROOT / link).exists()]
    assert not missing, missing


def test_readme_commands_match_ci():
    """The README's two set-up commands, and the test command is the one .ci/run runs."""
    text = README.read_text()
    assert "python3 -m pip install -e . && purejaxppo train\n" in text
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    test_command = ci[ci.index("# --- the README's test command ---") + 1]
    assert test_command == 'python -m pip install -e ".[dev]" && python -m pytest -q'
    assert f"```bash\n{test_command}\n```" in text


def test_readme_python_examples_are_run_by_the_guide():
    """The README's Python example is one of the guide's runnable blocks (run above), word for word."""
    blocks = FENCE.findall(README.read_text())
    assert blocks
    guide = {b for p in guide_pages() for b in python_blocks(p)}
    assert all(b in guide for b in blocks)
