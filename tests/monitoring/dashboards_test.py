#!/usr/bin/env python3
"""The Grafana dashboards of monitoring/grafana/ are importable and name only metrics that exist:
 1. the committed JSON equals what monitoring/grafana/generate.py writes (edit the script, rerun);
 2. every dashboard is valid JSON with title, unique uid, schemaVersion, panels with unique ids,
    the `datasource` variable (type prometheus), and every target reading it;
 3. every switchyard_* name in a target or annotation `expr` (rows' nested panels included) is in
    the metric table printed by sy_metrics_list; a name ending in _bucket/_sum/_count must be a
    histogram of the table with that suffix, and a histogram is never named bare;
 4. with promtool, every expression parses (one recording rule each; Grafana variables replaced).
Needs SY_SOURCE_DIR and SY_BUILD_DIR (ctest sets them). Plain python3 stdlib, like promtool_test.sh.
"""
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

NAME = re.compile(r"(?<![A-Za-z0-9_:])switchyard_[a-z0-9_]+")
SUFFIXES = ("_bucket", "_sum", "_count")
failures = []


def fail(msg):
    failures.append(msg)
    print("FAIL: " + msg)


def walk_panels(panels):
    for p in panels or []:
        yield p
        yield from walk_panels(p.get("panels"))


def exprs(board):
    """(panel title, expr) for every target of every panel, and every annotation query."""
    for p in walk_panels(board.get("panels")):
        for t in p.get("targets") or []:
            if "expr" in t:
                yield p.get("title", "<untitled>"), t["expr"]
    for a in (board.get("annotations") or {}).get("list", []):
        if "expr" in a:
            yield "annotation " + a.get("name", "<unnamed>"), a["expr"]
        if isinstance(a.get("target"), dict) and "expr" in a["target"]:
            yield "annotation " + a.get("name", "<unnamed>"), a["target"]["expr"]


def check_names(where, expr, table):
    names = NAME.findall(expr)
    for name in names:
        if name in table:
            if table[name] == "histogram":
                fail(f"{where}: {name} is a histogram; name its _bucket, _sum or _count series")
            continue
        base = next((name[: -len(s)] for s in SUFFIXES if name.endswith(s)), None)
        if base is None or base not in table:
            fail(f"{where}: unknown metric {name} (not in the table of sy_metrics_list)")
        elif table[base] != "histogram":
            fail(f"{where}: {name}: {base} is a {table[base]}, not a histogram")
    return names


def for_promtool(expr):
    """The expression with Grafana's variables replaced by values promtool accepts."""
    for v, val in (("__rate_interval", "1m"), ("__interval", "1m"), ("__range", "1h")):
        expr = expr.replace("${" + v + "}", val).replace("$" + v, val)
    return re.sub(r"\$\{[A-Za-z0-9_]+(:[^}]*)?\}|\$[A-Za-z_][A-Za-z0-9_]*", ".*", expr)


def main():
    src = os.environ.get("SY_SOURCE_DIR")
    build = os.environ.get("SY_BUILD_DIR")
    if not src or not build:
        print("FAIL: SY_SOURCE_DIR and SY_BUILD_DIR must be set (ctest sets them)")
        return 1
    gdir = os.path.join(src, "monitoring", "grafana")
    out = subprocess.run([os.path.join(build, "tests", "sy_metrics_list")], capture_output=True, text=True)
    if out.returncode != 0:
        print(f"FAIL: sy_metrics_list: {out.stderr}")
        return 1
    table = dict(line.split(" ")[:2] for line in out.stdout.splitlines() if line.strip())
    if len(table) < 2:
        print("FAIL: sy_metrics_list printed no table")
        return 1

    files = sorted(glob.glob(os.path.join(gdir, "*.json")))
    if not files:
        print(f"FAIL: no dashboard in {gdir}")
        return 1

    work = tempfile.mkdtemp(prefix="sy-dashboards-test.")
    try:
        # 1. Generated, not hand-edited.
        gen = subprocess.run([sys.executable, os.path.join(gdir, "generate.py"), work], capture_output=True, text=True)
        if gen.returncode != 0:
            fail(f"generate.py: {gen.stderr}")
        else:
            made = sorted(os.path.basename(f) for f in glob.glob(os.path.join(work, "*.json")))
            if made != [os.path.basename(f) for f in files]:
                fail(f"generate.py writes {made}, monitoring/grafana/ holds {[os.path.basename(f) for f in files]}")
            for f in files:
                g = os.path.join(work, os.path.basename(f))
                if os.path.exists(g) and open(g, encoding="utf-8").read() != open(f, encoding="utf-8").read():
                    fail(f"{os.path.basename(f)} differs from generate.py's output: edit generate.py and run "
                         f"`python3 monitoring/grafana/generate.py monitoring/grafana`")

        # 2 and 3. Structure and names.
        uids, all_exprs, used = {}, [], set()
        for f in files:
            base = os.path.basename(f)
            try:
                board = json.load(open(f, encoding="utf-8"))
            except ValueError as e:
                fail(f"{base}: invalid JSON: {e}")
                continue
            for key in ("title", "uid", "panels", "schemaVersion"):
                if not board.get(key):
                    fail(f"{base}: no {key}")
            uid = board.get("uid")
            if uid in uids:
                fail(f"{base}: uid {uid} is also the uid of {uids[uid]}")
            uids[uid] = base
            title = board.get("title", base)
            variables = {v.get("name"): v for v in (board.get("templating") or {}).get("list", [])}
            ds = variables.get("datasource")
            if not ds or ds.get("type") != "datasource" or ds.get("query") != "prometheus":
                fail(f"{title}: no `datasource` variable of type datasource/prometheus")
            ids = [p.get("id") for p in walk_panels(board.get("panels"))]
            if len(ids) != len(set(ids)) or None in ids:
                fail(f"{title}: panel ids missing or repeated: {ids}")
            for p in walk_panels(board.get("panels")):
                if "gridPos" not in p:
                    fail(f"{title} / {p.get('title')}: no gridPos")
                for t in p.get("targets") or []:
                    if (t.get("datasource") or {}).get("uid") != "${datasource}":
                        fail(f"{title} / {p.get('title')}: target {t.get('refId')} does not use ${{datasource}}")
            n = 0
            for panel, expr in exprs(board):
                n += 1
                names = check_names(f"{title} ({base}) / panel \"{panel}\"", expr, table)
                if not names and not re.search(r"(?<![A-Za-z0-9_:])up\{", expr):  # Prometheus's own `up`
                    fail(f"{title} / panel \"{panel}\": expression names no switchyard_ metric: {expr}")
                used.update(names)
                all_exprs.append((f"{base} / {panel}", expr))
            if n == 0:
                fail(f"{title}: no expressions")

        # 4. PromQL syntax.
        if shutil.which("promtool"):
            rules = os.path.join(work, "dashboards.rules.yml")
            with open(rules, "w", encoding="utf-8") as r:
                r.write("groups:\n  - name: dashboards\n    rules:\n")
                for i, (where, expr) in enumerate(all_exprs):
                    r.write(f"      # {where}\n      - record: dashboard:expr_{i}\n"
                            f"        expr: {json.dumps(for_promtool(expr))}\n")
            check = subprocess.run(["promtool", "check", "rules", rules], capture_output=True, text=True)
            if check.returncode != 0:
                # Find the culprit(s) one by one so the message names the panel.
                for where, expr in all_exprs:
                    one = os.path.join(work, "one.rules.yml")
                    with open(one, "w", encoding="utf-8") as r:
                        r.write("groups:\n  - name: one\n    rules:\n      - record: dashboard:expr\n"
                                f"        expr: {json.dumps(for_promtool(expr))}\n")
                    c = subprocess.run(["promtool", "check", "rules", one], capture_output=True, text=True)
                    if c.returncode != 0:
                        fail(f"{where}: promtool rejects {for_promtool(expr)!r}: {(c.stdout + c.stderr).strip()}")
                if not failures:
                    fail(f"promtool check rules: {(check.stdout + check.stderr).strip()}")
            promtool = "promtool-checked"
        else:
            promtool = "promtool not installed, PromQL syntax not checked"
    finally:
        shutil.rmtree(work, ignore_errors=True)

    if failures:
        print(f"{len(failures)} failure(s)")
        return 1
    print(f"ok: {len(files)} dashboards, {len(all_exprs)} expressions ({promtool}); "
          f"{len(used)} series names used, all in the table of {len(table)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
