"""The static import scan behind every rule's code inputs (neurotrain.codedeps)."""

import ast
import textwrap

from neurotrain import codedeps

SOURCE = textwrap.dedent('''
    import a
    from . import b
    def f():
        import c
        class K:
            from d import e
    if x:
        import g
    elif y:
        import h
    else:
        import i
    try:
        import j
    except ImportError:
        import k
    else:
        import l
    finally:
        import m
    with open(p) as q:
        import n
    for r in s:
        import o
    while t:
        import p2
    async def u():
        async with v:
            import w
    match z:
        case 1:
            import y2
    x = lambda: __import__("not_a_statement")
''')


def test_every_import_statement_is_found_in_every_kind_of_block():
    tree = ast.parse(SOURCE)
    walked = [ast.dump(n) for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
    found = [ast.dump(n) for n in codedeps._statements(tree.body) if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert sorted(found) == sorted(walked) and len(found) == 16


def test_closure_of_the_runner_holds_its_imports_and_their_packages():
    files = {p.relative_to(codedeps.ROOT).as_posix() for p in codedeps.closure("neurotrain.runner")}
    assert {"__init__.py", "runner.py", "errors.py", "config.py"} <= files


def test_import_lists_kept_on_disk_are_used_while_their_file_is_unchanged(tmp_path, monkeypatch, request):
    for cached in (codedeps.closure, codedeps._parsed_imports, codedeps._module_file):  # no entry of the fake package outlives the test
        request.addfinalizer(cached.cache_clear)
    pkg = tmp_path / "src" / "neurotrain"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from neurotrain import b\n")
    (pkg / "b.py").write_text("import os\n")
    (pkg / "c.py").write_text("")
    for name, value in {"ROOT": pkg, "_disk": {}, "_disk_file": None, "_disk_dirty": False}.items():
        monkeypatch.setattr(codedeps, name, value)

    def fresh_process(cache):
        for cached in (codedeps.closure, codedeps._parsed_imports, codedeps._module_file):
            cached.cache_clear()
        monkeypatch.setattr(codedeps, "_disk", {})
        codedeps.use_cache(cache)

    def names(module):
        return sorted(p.name for p in codedeps.closure(module))

    cache = tmp_path / "work" / ".snakemake" / "neurotrain" / "imports.json"
    fresh_process(cache)
    assert names("neurotrain.a") == ["__init__.py", "a.py", "b.py"]
    codedeps.save_cache()
    assert cache.is_file()

    # the next process parses nothing while the files are unchanged
    fresh_process(cache)
    parse = codedeps._parsed_imports
    monkeypatch.setattr(codedeps, "_parsed_imports", lambda *a: (_ for _ in ()).throw(AssertionError("parsed")))
    assert names("neurotrain.a") == ["__init__.py", "a.py", "b.py"]

    # an edited file is parsed again
    monkeypatch.setattr(codedeps, "_parsed_imports", parse)
    (pkg / "a.py").write_text("from neurotrain import b, c\n")
    fresh_process(cache)
    assert names("neurotrain.a") == ["__init__.py", "a.py", "b.py", "c.py"]

    # a damaged cache is ignored
    cache.write_text("{not json")
    fresh_process(cache)
    assert names("neurotrain.a") == ["__init__.py", "a.py", "b.py", "c.py"]
    codedeps.save_cache()
    assert "a.py" in cache.read_text()
