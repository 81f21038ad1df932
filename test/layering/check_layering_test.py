#!/usr/bin/env python3
"""Self-test of check_layering.py: runs it on small fake trees built in a temporary
directory, each with its own docs/architecture.md table. Standard library only."""

import os
import subprocess
import sys
import tempfile
import textwrap
import unittest
from pathlib import Path

CHECKER = Path(__file__).resolve().with_name("check_layering.py")

GRAPH = {
    "core": [],
    "bus": ["core"],
    "platform": ["core", "bus"],
    "tools": ["core", "bus"],
    "roles": ["core", "bus", "platform", "tools"],
}


def architecture_md(graph):
    rows = "\n".join(
        f"| `{m}` | {', '.join(f'`{d}`' for d in deps) if deps else '—'} |" for m, deps in graph.items())
    return (
        "# Architecture\n\n## Modules\n\n| module | responsibility |\n| --- | --- |\n"
        "| `core` | not the graph: the checker must not read this table |\n\n"
        f"## Module graph\n\nWho may include whom.\n\n| module | may include |\n| --- | --- |\n{rows}\n\n"
        "Some words.\n\n## Runtime model\n\n| module | may include |\n| --- | --- |\n| `x` | `y` |\n")


# A clean tree. Every module's files sit where the checker expects them; the includes in
# comments and literals below are not includes and would fail if they were read as such.
CLEAN = {
    "include/stargazer/core/result.hpp": """\
        #pragma once
        #include <vector>
        // #include "stargazer/tools/registry.hpp"
        /* #include "stargazer/missing.hpp"
           #include "stargazer/bus/event_bus.hpp" */
        namespace stargazer { inline constexpr int limit = 1'000'000; }
        """,
    "src/core/result.cpp": """\
        #include "stargazer/core/result.hpp"
        #include "detail/net.hpp"
        const char* a = "#include \\"stargazer/tools/registry.hpp\\"";
        const char* b = R"x(
        #include "stargazer/tools/registry.hpp"
        )x";
        const char c = '"';
        const int d = 10'000; const char e = '\\'';
        """,
    "src/core/detail/net.hpp": "#pragma once\n",
    "include/stargazer/bus/event_bus.hpp": """\
        #pragma once
          #  include "stargazer/core/result.hpp"
        """,
    "src/bus/event_bus.cpp": """\
        #include "stargazer/bus/event_bus.hpp"
        #include "../core/detail/net.hpp"
        """,
    "src/platform/discord/adapter.cpp": """\
        #include "stargazer/bus/event_bus.hpp"
        #include "platform/assets.hpp"
        """,
    "src/platform/assets.hpp": "#pragma once\n",
    "include/stargazer/tools/registry.hpp": """\
        #pragma once
        #include "stargazer/bus/event_bus.hpp"
        """,
    "src/tools/registry.cpp": '#include "stargazer/tools/registry.hpp"\n',
    "roles/common.hpp": '#include "stargazer/tools/registry.hpp"\n',
    "roles/main.cpp": """\
        #include "common.hpp"
        #include "stargazer/platform/../core/result.hpp"
        #include <stargazer_third_party/lib.hpp>
        """,
    "src/CMakeLists.txt": "not a source file\n",
}


class LayeringCheckTest(unittest.TestCase):
    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory(prefix="layering-")
        self.root = Path(self._tmp.name)
        self.write_tree(CLEAN)
        self.write_graph(GRAPH)

    def tearDown(self):
        self._tmp.cleanup()

    def write(self, rel, text):
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")

    def write_tree(self, files):
        for rel, text in files.items():
            self.write(rel, text)

    def write_graph(self, graph):
        self.write("docs/architecture.md", architecture_md(graph))

    def append(self, rel, line):
        path = self.root / rel
        path.write_text(path.read_text(encoding="utf-8") + line + "\n", encoding="utf-8")
        return path.read_text(encoding="utf-8").count("\n")  # the new line's number

    def run_checker(self, *extra):
        r = subprocess.run([sys.executable, "-B", str(CHECKER), str(self.root), *extra],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60)
        return r.returncode, r.stdout

    def assert_fails_with(self, expected, code=1):
        rc, out = self.run_checker()
        self.assertEqual(rc, code, out)
        self.assertIn(expected, out)
        return out

    # --- the clean tree ---

    def test_clean_tree_passes(self):
        rc, out = self.run_checker()
        self.assertEqual(rc, 0, out)
        lines = out.strip().splitlines()
        self.assertEqual(len(lines), 1, out)
        # 11 sources (CMakeLists.txt is not one); 12 quoted includes outside comments and literals.
        self.assertEqual(lines[0], "layering ok: 11 files, 12 includes checked, 5 module edges seen, "
                                   "5 modules in docs/architecture.md")

    def test_edges_listing(self):
        rc, out = self.run_checker("--edges")
        self.assertEqual(rc, 0, out)
        self.assertIn("platform -> bus: 1 include (allowed)", out)
        self.assertIn("roles -> core: 1 include (allowed)", out)  # through ../ inside include/

    def test_default_root_is_two_levels_up(self):
        # Without an argument the checker looks at the repository it lives in; whatever that
        # tree's state, it must find the table there (exit 0 or 1, not 2).
        r = subprocess.run([sys.executable, "-B", str(CHECKER)], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=120)
        self.assertIn(r.returncode, (0, 1), r.stdout)
        self.assertRegex(r.stdout.strip().splitlines()[-1], r"^layering( ok)?: ")

    # --- forbidden edges ---

    def test_forbidden_include_fails_naming_file_line_and_edge(self):
        line = self.append("src/core/result.cpp", '#include "stargazer/tools/registry.hpp"')
        out = self.assert_fails_with(
            f"src/core/result.cpp:{line}: module 'core' may not include module 'tools' "
            '("stargazer/tools/registry.hpp")')
        self.assertIn("layering: 1 error (", out)

    def test_forbidden_include_in_a_header(self):
        line = self.append("include/stargazer/bus/event_bus.hpp", '#include "stargazer/platform/x.hpp"')
        self.write("include/stargazer/platform/x.hpp", "#pragma once\n")
        self.assert_fails_with(f"include/stargazer/bus/event_bus.hpp:{line}: module 'bus' may not include "
                               "module 'platform' (\"stargazer/platform/x.hpp\")")

    def test_every_violation_is_reported(self):
        a = self.append("src/core/result.cpp", '#include "stargazer/bus/event_bus.hpp"')
        b = self.append("src/tools/registry.cpp", '#include "stargazer/platform/assets_api.hpp"')
        self.write("include/stargazer/platform/assets_api.hpp", "#pragma once\n")
        out = self.assert_fails_with(f"src/core/result.cpp:{a}: module 'core' may not include module 'bus'")
        self.assertIn(f"src/tools/registry.cpp:{b}: module 'tools' may not include module 'platform'", out)
        self.assertIn("layering: 2 errors (", out)

    def test_edges_are_not_transitive(self):
        # roles may include tools, and tools bus; without `bus` in its own row roles may not.
        graph = dict(GRAPH, roles=["core", "platform", "tools"])
        self.write_graph(graph)
        self.append("roles/main.cpp", '#include "stargazer/bus/event_bus.hpp"')
        self.assert_fails_with("module 'roles' may not include module 'bus'")

    def test_subfolders_belong_to_their_module(self):
        line = self.append("src/platform/discord/adapter.cpp", '#include "stargazer/tools/registry.hpp"')
        self.assert_fails_with(f"src/platform/discord/adapter.cpp:{line}: module 'platform' may not include "
                               "module 'tools'")

    # --- resolution ---

    def test_relative_include_is_resolved_and_checked(self):
        self.write("src/bus/x.hpp", "#pragma once\n")
        ok = self.append("src/platform/discord/adapter.cpp", '#include "../../bus/x.hpp"')
        rc, out = self.run_checker("--edges")
        self.assertEqual(rc, 0, out)
        self.assertIn("platform -> bus: 2 includes (allowed)", out)
        line = self.append("src/core/result.cpp", '#include "../bus/x.hpp"')
        out = self.assert_fails_with(
            f"src/core/result.cpp:{line}: module 'core' may not include module 'bus' (\"../bus/x.hpp\")")
        self.assertNotIn(f"adapter.cpp:{ok}:", out)

    def test_src_is_a_private_include_directory(self):
        line = self.append("src/core/result.cpp", '#include "platform/assets.hpp"')
        self.assert_fails_with(f"src/core/result.cpp:{line}: module 'core' may not include module 'platform' "
                               '("platform/assets.hpp")')

    def test_stargazer_paths_resolve_in_include_first(self):
        # A same-named file next to the includer must not shadow include/stargazer/...
        self.write("src/core/stargazer/tools/registry.hpp", "#pragma once\n")
        line = self.append("src/core/result.cpp", '#include "stargazer/tools/registry.hpp"')
        self.assert_fails_with(f"src/core/result.cpp:{line}: module 'core' may not include module 'tools'")

    def test_include_of_a_missing_file_fails(self):
        line = self.append("src/bus/event_bus.cpp", '#include "stargazer/bus/gone.hpp"')
        self.assert_fails_with(f'src/bus/event_bus.cpp:{line}: "stargazer/bus/gone.hpp" resolves to no file '
                               "of the repository (tried include/stargazer/bus/gone.hpp, "
                               "src/bus/stargazer/bus/gone.hpp, src/stargazer/bus/gone.hpp)")

    def test_include_leaving_the_repository_fails(self):
        line = self.append("src/bus/event_bus.cpp", '#include "../../../../etc/hostname"')
        self.assert_fails_with(f'src/bus/event_bus.cpp:{line}: "../../../../etc/hostname" resolves to no file')

    def test_include_of_a_file_of_no_module_fails(self):
        self.write("test/support/fake.hpp", "#pragma once\n")
        line = self.append("src/bus/event_bus.cpp", '#include "../../test/support/fake.hpp"')
        self.assert_fails_with(f'src/bus/event_bus.cpp:{line}: "../../test/support/fake.hpp" resolves to '
                               "test/support/fake.hpp, which belongs to no module")

    def test_project_header_with_angle_brackets_fails(self):
        line = self.append("src/core/result.cpp", "#include <stargazer/tools/registry.hpp>")
        self.assert_fails_with(f"src/core/result.cpp:{line}: include the project's header with quotes")

    # --- modules and the table ---

    def test_module_missing_from_the_table_fails(self):
        self.write("src/llm/client.cpp", '#include "stargazer/core/result.hpp"\n')
        self.assert_fails_with("src/llm/client.cpp: module 'llm' is not in the module graph")

    def test_included_module_missing_from_the_table_fails(self):
        self.write("include/stargazer/llm/chat.hpp", "#pragma once\n")
        self.append("src/tools/registry.cpp", '#include "stargazer/llm/chat.hpp"')
        self.assert_fails_with("include/stargazer/llm/chat.hpp: module 'llm' is not in the module graph")

    def test_file_directly_in_src_fails(self):
        self.write("src/stray.cpp", '#include "stargazer/core/result.hpp"\n')
        self.assert_fails_with("src/stray.cpp: a file directly in src/ belongs to no module")

    def test_header_outside_include_stargazer_fails(self):
        self.write("include/stray.hpp", "#pragma once\n")
        self.assert_fails_with("include/stray.hpp: only include/stargazer/<module>/ holds modules' headers")

    def test_missing_heading_cannot_run(self):
        self.write("docs/architecture.md", "# Architecture\n\n## Modules\n\n| module | may include |\n")
        self.assert_fails_with("no heading '## Module graph'", code=2)

    def test_table_must_be_in_the_section(self):
        self.write("docs/architecture.md", "## Module graph\n\nLater.\n\n## Next\n\n"
                                           "| module | may include |\n| --- | --- |\n| `core` | — |\n")
        self.assert_fails_with("no table under '## Module graph'", code=2)

    def test_table_naming_an_unknown_module_cannot_run(self):
        self.write_graph(dict(GRAPH, tools=["core", "buss"]))
        self.assert_fails_with("'tools' may include buss, which the table does not list as modules", code=2)

    def test_table_without_the_columns_cannot_run(self):
        self.write("docs/architecture.md", "## Module graph\n\n| name | deps |\n| --- | --- |\n| `core` | — |\n")
        self.assert_fails_with("the table needs the columns 'module' and 'may include'", code=2)

    def test_no_sources_cannot_run(self):
        empty = Path(self._tmp.name) / "empty"
        (empty / "docs").mkdir(parents=True)
        (empty / "docs" / "architecture.md").write_text(architecture_md(GRAPH), encoding="utf-8")
        r = subprocess.run([sys.executable, "-B", str(CHECKER), str(empty)], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=60)
        self.assertEqual(r.returncode, 2, r.stdout)


if __name__ == "__main__":
    unittest.main(verbosity=2)
