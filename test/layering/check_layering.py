#!/usr/bin/env python3
"""Checks the module layering of Stargazer.

Reads every quoted include (#include "...") in src/, include/ and roles/ (files *.hpp,
*.cpp, *.h), resolves it to a file of the repository, maps the including file and the
included file to modules, and reports every include whose edge the module graph does
not allow. The graph is the table under "## Module graph" in docs/architecture.md
(columns `module` and `may include`); a module may always include itself, and only
the edges listed are allowed (no transitivity).

Resolution, as the compiler sees it: "stargazer/..." in include/ first, then relative
to the including file's directory, then relative to src/ (the library's private
include directory, e.g. "platform/webchat_assets.hpp").

Modules: src/<m>/... and include/stargazer/<m>/... belong to <m> (subfolders included,
src/platform/discord/ is `platform`); roles/... belongs to `roles`.

Errors (exit 1): a forbidden edge; an include that resolves to no file of the
repository, or to a file of no module; a file of no module (e.g. directly in src/);
a module that is not in the table; a project header included with angle brackets
(<stargazer/...>), which this check would not see.
Exit 2: the check cannot run (no table, a malformed table, no sources).
Exit 0: prints a one-line summary.

Usage: check_layering.py [ROOT] [--edges]   (ROOT defaults to two levels above this file)
Standard library only (Python 3.9+).
"""

import argparse
import os
import posixpath
import re
import sys
from collections import Counter
from pathlib import Path

SOURCE_DIRS = ("src", "include", "roles")
EXTENSIONS = (".hpp", ".cpp", ".h")
GRAPH_DOC = "docs/architecture.md"
GRAPH_HEADING = "## Module graph"
NO_MODULES = {"", "—", "–", "-"}
MODULE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")

# C++ tokens, enough to tell directives from comments and literals: an include in a
# comment or in a (raw) string literal is not an include. Digit separators (1'000) are
# part of a pp-number, not the start of a character literal.
_TOKEN = re.compile(
    r"""
      (?P<nl>\n)
    | (?P<ws>[ \t\r\f\v]+|\\\r?\n)
    | (?P<line_comment>//(?:\\\r?\n|[^\n])*)
    | (?P<block_comment>/\*.*?(?:\*/|\Z))
    | (?P<raw>(?:u8|[uUL])?R"(?P<delim>[^()\\\s"]{0,16})\(.*?(?:\)(?P=delim)"|\Z))
    | (?P<string>(?:u8|[uUL])?"(?:[^"\\\n]|\\.)*"?)
    | (?P<char>(?:u8|[uUL])?'(?:[^'\\\n]|\\.)*'?)
    | (?P<number>\.?[0-9](?:[eEpP][+-]|'[0-9A-Za-z_]|[0-9A-Za-z_.])*)
    | (?P<identifier>[A-Za-z_][A-Za-z0-9_]*)
    | (?P<hash>\#)
    | (?P<other>.)
    """,
    re.VERBOSE | re.DOTALL,
)
_QUOTED_INCLUDE = re.compile(r'#[ \t]*include[ \t]*"([^"\n]*)"')
_ANGLE_INCLUDE = re.compile(r"#[ \t]*include[ \t]*<([^>\n]*)>")


class GraphError(Exception):
    pass


def scan_includes(text):
    """Returns ([(line, path)] of quoted includes, [(line, path)] of angle includes)."""
    quoted, angle = [], []
    pos, line, at_line_start = 0, 1, True
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        kind, token = m.lastgroup, m.group()
        if kind == "hash" and at_line_start:
            d = _QUOTED_INCLUDE.match(text, pos)
            if d:
                quoted.append((line, d.group(1)))
            else:
                d = _ANGLE_INCLUDE.match(text, pos)
                if d:
                    angle.append((line, d.group(1)))
            if d:
                token = d.group()
        if kind == "nl":
            at_line_start = True
        elif kind not in ("ws", "block_comment", "line_comment"):
            at_line_start = False
        line += token.count("\n")
        pos += len(token)
    return quoted, angle


def module_of(rel):
    """(module, None) or (None, why) for a path relative to the root, '/'-separated."""
    parts = rel.split("/")
    if parts[0] == "src":
        if len(parts) >= 3:
            return parts[1], None
        return None, "a file directly in src/ belongs to no module"
    if parts[0] == "include":
        if len(parts) >= 4 and parts[1] == "stargazer":
            return parts[2], None
        return None, "only include/stargazer/<module>/ holds modules' headers"
    if parts[0] == "roles":
        return "roles", None
    return None, "only src/, include/stargazer/ and roles/ hold modules"


def resolve(root, including, include):
    """(path relative to root, tried) for an include, or (None, tried)."""
    tried = []
    if not include or posixpath.isabs(include) or "\\" in include:
        return None, tried
    if include.startswith("stargazer/"):
        tried.append("include/" + include)
    tried.append(posixpath.join(posixpath.dirname(including), include))
    tried.append("src/" + include)
    for candidate in tried:
        rel = posixpath.normpath(candidate)
        if rel == ".." or rel.startswith("../"):
            continue  # outside the repository
        if os.path.isfile(os.path.join(root, *rel.split("/"))):
            return rel, tried
    return None, [posixpath.normpath(t) for t in tried]


def _cells(row):
    row = row.strip()
    if row.startswith("|"):
        row = row[1:]
    if row.endswith("|"):
        row = row[:-1]
    return [c.strip() for c in row.split("|")]


def _name(cell):
    return cell.strip().strip("`").strip()


def read_graph(path):
    """{module: set of modules it may include} from the table under GRAPH_HEADING."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise GraphError(f"{GRAPH_DOC}: cannot read: {e.strerror}")
    start = next((i for i, l in enumerate(lines) if l.strip() == GRAPH_HEADING), None)
    if start is None:
        raise GraphError(f"{GRAPH_DOC}: no heading '{GRAPH_HEADING}'")
    first = None
    for i in range(start + 1, len(lines)):
        if re.match(r"#{1,2}\s", lines[i]):
            break  # the next section: the table must be in this one
        if lines[i].lstrip().startswith("|"):
            first = i
            break
    if first is None:
        raise GraphError(f"{GRAPH_DOC}:{start + 1}: no table under '{GRAPH_HEADING}'")
    end = first
    while end < len(lines) and lines[end].lstrip().startswith("|"):
        end += 1
    header = [_name(c).lower() for c in _cells(lines[first])]
    if "module" not in header or "may include" not in header:
        raise GraphError(f"{GRAPH_DOC}:{first + 1}: the table needs the columns 'module' and 'may include'")
    col_module, col_may = header.index("module"), header.index("may include")
    if end - first < 2 or not all(re.fullmatch(r":?-+:?", c) for c in _cells(lines[first + 1])):
        raise GraphError(f"{GRAPH_DOC}:{first + 2}: the table has no separator row")

    graph, where = {}, {}
    for i in range(first + 2, end):
        cells = _cells(lines[i])
        at = f"{GRAPH_DOC}:{i + 1}"
        if len(cells) <= max(col_module, col_may):
            raise GraphError(f"{at}: too few cells")
        module = _name(cells[col_module])
        if not MODULE_NAME.match(module):
            raise GraphError(f"{at}: '{cells[col_module]}' is not a module name")
        if module in graph:
            raise GraphError(f"{at}: module '{module}' is listed twice")
        allowed = set()
        if cells[col_may] not in NO_MODULES:
            for item in cells[col_may].split(","):
                name = _name(item)
                if not MODULE_NAME.match(name):
                    raise GraphError(f"{at}: '{item.strip()}' is not a module name (write `a`, `b` or —)")
                allowed.add(name)
        graph[module], where[module] = allowed, at
    if not graph:
        raise GraphError(f"{GRAPH_DOC}:{first + 1}: the table has no rows")
    for module, allowed in graph.items():
        unknown = sorted(allowed - graph.keys())
        if unknown:
            raise GraphError(f"{where[module]}: '{module}' may include {', '.join(unknown)}, "
                             "which the table does not list as modules")
    return graph


def source_files(root):
    for top in SOURCE_DIRS:
        base = os.path.join(root, top)
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames.sort()
            for f in sorted(filenames):
                if f.endswith(EXTENSIONS):
                    yield posixpath.relpath(os.path.join(dirpath, f).replace(os.sep, "/"),
                                            root.replace(os.sep, "/"))


def check(root, show_edges=False, out=sys.stdout):
    root = os.path.abspath(root)
    if not os.path.isdir(root):
        print(f"check_layering: {root} is not a directory", file=out)
        return 2
    try:
        graph = read_graph(os.path.join(root, GRAPH_DOC))
    except GraphError as e:
        print(f"check_layering: {e}", file=out)
        return 2

    errors = []
    first_file = {}   # module -> first file seen of it
    includes = []     # (file, line, include, module, target module)
    files = sorted(source_files(root))
    if not files:
        print(f"check_layering: no {'/'.join(EXTENSIONS)} files in {', '.join(SOURCE_DIRS)} of {root}", file=out)
        return 2
    checked = 0
    for rel in files:
        module, why = module_of(rel)
        if module is None:
            errors.append(f"{rel}: {why}")
        else:
            first_file.setdefault(module, rel)
        try:
            text = Path(root, rel).read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            continue  # removed while the check ran
        quoted, angle = scan_includes(text)
        for line, inc in angle:
            if inc.startswith("stargazer/"):
                errors.append(f'{rel}:{line}: include the project\'s header with quotes, "{inc}", '
                              "not <>: angle-bracket includes are not checked")
        for line, inc in quoted:
            checked += 1
            target, tried = resolve(root, rel, inc)
            if target is None:
                errors.append(f'{rel}:{line}: "{inc}" resolves to no file of the repository '
                              + (f"(tried {', '.join(tried)})" if tried else "(not a relative path)"))
                continue
            target_module, why = module_of(target)
            if target_module is None:
                errors.append(f'{rel}:{line}: "{inc}" resolves to {target}, which belongs to no module ({why})')
                continue
            first_file.setdefault(target_module, target)
            if module is not None:
                includes.append((rel, line, inc, module, target_module))

    for module in sorted(first_file.keys() - graph.keys()):
        errors.append(f"{first_file[module]}: module '{module}' is not in the module graph "
                      f"(the table under '{GRAPH_HEADING}' in {GRAPH_DOC})")
    edges = Counter()
    for rel, line, inc, a, b in includes:
        if a == b:
            continue
        edges[(a, b)] += 1
        if a in graph and b in graph and b not in graph[a]:
            errors.append(f'{rel}:{line}: module \'{a}\' may not include module \'{b}\' ("{inc}")')

    if show_edges:
        for (a, b), n in sorted(edges.items()):
            verdict = "allowed" if a in graph and b in graph.get(a, ()) else "FORBIDDEN"
            print(f"  {a} -> {b}: {n} include{'s' if n != 1 else ''} ({verdict})", file=out)
    summary = (f"{len(files)} files, {checked} includes checked, "
               f"{len(edges)} module edges seen, {len(graph)} modules in {GRAPH_DOC}")
    if errors:
        for e in errors:
            print(e, file=out)
        print(f"layering: {len(errors)} error{'s' if len(errors) != 1 else ''} ({summary})", file=out)
        return 1
    print(f"layering ok: {summary}", file=out)
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", nargs="?", default=str(Path(__file__).resolve().parents[2]),
                        help="the repository root (default: two levels above this script)")
    parser.add_argument("--edges", action="store_true", help="also list every module edge seen")
    args = parser.parse_args(argv)
    return check(args.root, show_edges=args.edges)


if __name__ == "__main__":
    sys.exit(main())
