"""MkDocs hooks of the softfam site (mkdocs.yml: ``hooks``).

- Every public name of ``softfam`` (its ``__all__``) must be documented by a
  ``::: softfam.NAME`` block in ``docs/api/*.md``, and nothing else may be: either way the
  build stops.
- The generated tables, the hand-written findings and the benchmark tables under
  ``results/`` become pages of the site as they are, so the site never holds a copy that
  could drift from them.
- Math written as ``$...$`` or ``$$...$$`` (kept intact by ``pymdownx.arithmatex``) is
  turned into MathML at build time: browsers render it without any script, and the build
  needs no network.
"""

from __future__ import annotations

import ast
import html
import logging
import re
from pathlib import Path

import latex2mathml.converter
from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File

log = logging.getLogger("mkdocs.hooks.softfam_docs")


def _google_example_sections() -> None:
    """Read a docstring's ``Example:`` section as griffe reads ``Examples:``: as doctest code.

    softfam's docstrings head their doctests ``Example:``, which griffe's Google-style parser
    would otherwise render as an admonition of Markdown text. Where griffe's private table
    has moved, nothing is patched, and the examples' ``>>>`` lines then fail the strict
    build through their cross-reference warnings, which says what to change.
    """
    for module in ("griffe._internal.docstrings.google", "_griffe.docstrings.google"):
        try:
            google = __import__(module, fromlist=["_section_kind"])
            kinds = google._section_kind
        except (ImportError, AttributeError):
            continue
        kinds.setdefault("example", kinds["examples"])
        return


_google_example_sections()

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "results"
DIRECTIVE = re.compile(r"^:::\s+softfam\.(\w+)\s*$", re.MULTILINE)


def public_names() -> list[str]:
    """``softfam.__all__``, read from the source without importing JAX."""
    tree = ast.parse((ROOT / "softfam" / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            return list(ast.literal_eval(node.value))
    raise PluginError("softfam/__init__.py has no __all__")


def on_pre_build(config, **kwargs):
    documented: dict[str, str] = {}
    for page in sorted((Path(config["docs_dir"]) / "api").glob("*.md")):
        for name in DIRECTIVE.findall(page.read_text()):
            if name in documented:
                raise PluginError(f"softfam.{name} is documented twice: {documented[name]}, {page.name}")
            documented[name] = page.name
    names = public_names()
    missing = sorted(set(names) - set(documented))
    extra = sorted(set(documented) - set(names))
    if missing:
        raise PluginError(f"public names of softfam without an API entry in docs/api/: {missing}")
    if extra:
        raise PluginError(f"docs/api/ documents names that softfam.__all__ does not export: {extra}")
    log.info("API reference: all %d public names of softfam documented", len(names))


def _result_files() -> list[Path]:
    """The findings, tables, plots and benchmark tables; never the run directories."""
    found = []
    for path in sorted(RESULTS.rglob("*")):
        rel = path.relative_to(RESULTS)
        if "runs" in rel.parts or not path.is_file():
            continue
        if path.suffix == ".md" or (path.suffix == ".png" and len(rel.parts) <= 3):
            found.append(path)
    return found


def on_files(files, config, **kwargs):
    for path in _result_files():
        files.append(
            File(
                str(path.relative_to(ROOT)),
                src_dir=str(ROOT),
                dest_dir=config["site_dir"],
                use_directory_urls=config["use_directory_urls"],
            )
        )
    return files


def on_page_markdown(markdown, page, config, files, **kwargs):
    src = page.file.src_uri
    if not src.startswith("results/"):
        return markdown
    folder = RESULTS / Path(src).relative_to("results").parent
    lines = markdown.split("\n", 1)
    rest = lines[1] if len(lines) > 1 else ""
    if src.endswith("/findings.md"):
        links = ["[the generated table](table.md)"] if (folder / "table.md").exists() else []
        links += [f"[{p.stem.replace('_', ' ')}]({p.name})" for p in sorted(folder.glob("*.png"))]
        note = (
            "\n\n!!! note \"In the repository\"\n"
            f"    This page is `{src}`, written by hand from "
            + ", ".join(links)
            + ".\n"
        )
        return lines[0] + note + rest
    if src.endswith("/table.md"):
        plots = "".join(
            f"\n\n![{p.stem.replace('_', ' ')}]({p.name})" for p in sorted(folder.glob("*.png"))
        )
        findings = "\n\nWhat the table shows: [findings](findings.md)." if (folder / "findings.md").exists() else ""
        return markdown + findings + plots
    return markdown


_INLINE = re.compile(r'<span class="arithmatex">\\\((.+?)\\\)</span>', re.DOTALL)
_BLOCK = re.compile(r'<div class="arithmatex">\\\[(.+?)\\\]</div>', re.DOTALL)


def _mathml(tex: str, display: str, page) -> str:
    try:
        return latex2mathml.converter.convert(html.unescape(tex).strip(), display=display)
    except Exception as error:  # noqa: BLE001 - any failure is a broken formula
        raise PluginError(f"{page.file.src_uri}: cannot render math {tex!r}: {error}") from error


def on_page_content(content, page, config, files, **kwargs):
    content = _BLOCK.sub(lambda m: _mathml(m.group(1), "block", page), content)
    return _INLINE.sub(lambda m: _mathml(m.group(1), "inline", page), content)
