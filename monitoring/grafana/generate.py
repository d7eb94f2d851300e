#!/usr/bin/env python3
"""Writes the Switchyard Grafana dashboards (Grafana JSON model, schemaVersion 39) to a folder.

The four *.json files beside this script are its output, committed so users can import them
without running anything; edit this script, not the JSON, and rerun it:

    python3 monitoring/grafana/generate.py monitoring/grafana

tests/monitoring/dashboards_test.py regenerates into a temporary folder and fails when the
committed JSON differs, then checks that every metric an expression names is in the metric table
(monitoring/metrics.cpp) and, with promtool, that every expression parses. Plain python3 stdlib.

Every panel reads the `datasource` variable (type prometheus), so an imported dashboard works with
whichever Prometheus the user picks; `cluster` and `instance` filter by the labels the scrape
config of `switchyard local` (and prometheus.example.yml) gives each node.
"""
import json
import os
import sys

DS = {"type": "prometheus", "uid": "${datasource}"}
SEL = 'cluster=~"$cluster", instance=~"$instance"'  # every expression's series filter
RATE = "$__rate_interval"


def hq(q, metric, by=""):
    """histogram_quantile of a table histogram, summed over everything but le (and `by`)."""
    keep = "le" + (", " + by if by else "")
    return f"histogram_quantile({q}, sum by ({keep}) (rate({metric}_bucket{{{SEL}}}[{RATE}])))"


class Board:
    """Lays panels out left to right in rows of 24 grid units; ids are assigned in order."""

    def __init__(self, uid, title, description, tags, extra_vars=(), annotations=()):
        self.uid, self.title, self.description, self.tags = uid, title, description, tags
        self.extra_vars, self.annotations = list(extra_vars), list(annotations)
        self.panels, self.x, self.y, self.row_h = [], 0, 0, 0

    def _place(self, w, h):
        if self.x + w > 24:
            self.x, self.y, self.row_h = 0, self.y + self.row_h, 0
        pos = {"h": h, "w": w, "x": self.x, "y": self.y}
        self.x += w
        self.row_h = max(self.row_h, h)
        return pos

    def row(self, title):
        if self.x:
            self.x, self.y, self.row_h = 0, self.y + self.row_h, 0
        self.panels.append({"type": "row", "title": title, "collapsed": False, "panels": [],
                            "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y}})
        self.y += 1

    def panel(self, kind, title, targets, w=12, h=8, unit="short", description="", **extra):
        refs = "ABCDEFGHIJ"
        tgts = []
        for i, t in enumerate(targets):
            expr, legend = (t, "") if isinstance(t, str) else t
            tgt = {"datasource": DS, "refId": refs[i], "expr": expr, "legendFormat": legend or "__auto",
                   "range": True, "editorMode": "code"}
            if extra.get("instant"):
                tgt.update({"range": False, "instant": True, "format": "table"})
            tgts.append(tgt)
        extra.pop("instant", None)
        defaults = {"unit": unit}
        defaults.update(extra.pop("defaults", {}))
        p = {"type": kind, "title": title, "description": description, "datasource": DS,
             "gridPos": self._place(w, h), "targets": tgts,
             "fieldConfig": {"defaults": defaults, "overrides": extra.pop("overrides", [])},
             "options": extra.pop("options", {})}
        p.update(extra)
        self.panels.append(p)

    def timeseries(self, title, targets, **kw):
        kw.setdefault("options", {"legend": {"displayMode": "table", "placement": "bottom",
                                             "calcs": ["mean", "max", "lastNotNull"]},
                                  "tooltip": {"mode": "multi", "sort": "desc"}})
        self.panel("timeseries", title, targets, **kw)

    def stat(self, title, expr, unit="short", w=4, h=4, **kw):
        kw.setdefault("options", {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                                  "colorMode": "value", "graphMode": "area", "textMode": "auto"})
        self.panel("stat", title, expr if isinstance(expr, list) else [expr], w=w, h=h, unit=unit, **kw)

    def json(self):
        for i, p in enumerate(self.panels, 1):
            p["id"] = i
        variables = [
            {"name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus",
             "current": {}, "hide": 0, "refresh": 1, "regex": "", "options": []},
            var("cluster", "Cluster", "label_values(switchyard_node_up, cluster)"),
            var("instance", "Node", 'label_values(switchyard_node_up{cluster=~"$cluster"}, instance)'),
        ] + self.extra_vars
        return {
            "__inputs": [],
            "__requires": [
                {"type": "grafana", "id": "grafana", "name": "Grafana", "version": "10.4.0"},
                {"type": "datasource", "id": "prometheus", "name": "Prometheus", "version": "1.0.0"},
            ],
            "annotations": {"list": [
                {"builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": True,
                 "hide": True, "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts",
                 "type": "dashboard"}] + self.annotations},
            "description": self.description,
            "editable": True,
            "fiscalYearStartMonth": 0,
            "graphTooltip": 1,
            "id": None,
            "links": [{"type": "dashboards", "tags": ["switchyard"], "asDropdown": True, "title": "Switchyard",
                       "includeVars": True, "keepTime": True}],
            "panels": self.panels,
            "refresh": "10s",
            "schemaVersion": 39,
            "tags": ["switchyard"] + self.tags,
            "templating": {"list": variables},
            "time": {"from": "now-1h", "to": "now"},
            "timepicker": {},
            "timezone": "",
            "title": self.title,
            "uid": self.uid,
            "version": 1,
        }


def var(name, label, query, all_value=".*"):
    return {"name": name, "label": label, "type": "query", "datasource": DS,
            "query": {"query": query, "refId": f"{name}-var"}, "definition": query,
            "refresh": 2, "includeAll": True, "multi": True, "allValue": all_value,
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
            "hide": 0, "regex": "", "sort": 3, "options": []}


def latency_panel(b, title, metric, description, w=8):
    b.timeseries(title, [(hq(q, metric), f"p{int(q * 100)}") for q in (0.5, 0.95, 0.99)],
                 unit="s", w=w, description=description)


def overview():
    b = Board("switchyard-overview", "Switchyard / Overview",
              "Requests, tokens and latency of a Switchyard cluster (the vLLM/SGLang serving view).",
              ["overview"])
    b.row("Now")
    b.stat("Requests/s", f"sum(rate(switchyard_requests_total{{{SEL}}}[{RATE}]))", unit="reqps")
    b.stat("Generated tokens/s", f"sum(rate(switchyard_generation_tokens_total{{{SEL}}}[{RATE}]))")
    b.stat("TTFT p95", hq(0.95, "switchyard_time_to_first_token_seconds"), unit="s")
    b.stat("ITL p95", hq(0.95, "switchyard_inter_token_latency_seconds"), unit="s")
    b.stat("Running / waiting",
           [(f"sum(switchyard_num_requests_running{{{SEL}}})", "running"),
            (f"sum(switchyard_num_requests_waiting{{{SEL}}})", "waiting")],
           description="Requests in running batches, and admitted requests waiting for a slot or KV pages.")
    b.stat("Error ratio",
           f'sum(rate(switchyard_requests_total{{{SEL}, outcome!="ok"}}[{RATE}])) '
           f"/ sum(rate(switchyard_requests_total{{{SEL}}}[{RATE}]))", unit="percentunit",
           description="Finished requests whose outcome is not ok.",
           defaults={"thresholds": {"mode": "absolute", "steps": [
               {"color": "green", "value": None}, {"color": "orange", "value": 0.01},
               {"color": "red", "value": 0.05}]}})
    b.row("Throughput")
    b.timeseries("Request throughput by outcome",
                 [(f"sum by (outcome) (rate(switchyard_requests_total{{{SEL}}}[{RATE}]))", "{{outcome}}")],
                 unit="reqps", description="Finished requests per second (ok, error, cancelled, rejected, timeout).")
    b.timeseries("Tokens/s",
                 [(f"sum(rate(switchyard_generation_tokens_total{{{SEL}}}[{RATE}]))", "generated"),
                  (f"sum(rate(switchyard_prompt_tokens_total{{{SEL}}}[{RATE}]))", "prompt")],
                 description="Generated tokens and prompt tokens of admitted requests, per second.")
    b.row("Latency")
    latency_panel(b, "Time to first token", "switchyard_time_to_first_token_seconds",
                  "From request arrival to its first generated token.")
    latency_panel(b, "Inter-token latency", "switchyard_inter_token_latency_seconds",
                  "Between consecutive generated tokens of one request.")
    latency_panel(b, "End-to-end request latency", "switchyard_e2e_request_latency_seconds",
                  "From request arrival to its last token.")
    latency_panel(b, "Queue time", "switchyard_request_queue_time_seconds",
                  "Time a request waited before its prefill started.")
    b.timeseries("Mean TTFT and e2e latency",
                 [(f"sum(rate(switchyard_time_to_first_token_seconds_sum{{{SEL}}}[{RATE}])) / "
                   f"sum(rate(switchyard_time_to_first_token_seconds_count{{{SEL}}}[{RATE}]))", "TTFT"),
                  (f"sum(rate(switchyard_e2e_request_latency_seconds_sum{{{SEL}}}[{RATE}])) / "
                   f"sum(rate(switchyard_e2e_request_latency_seconds_count{{{SEL}}}[{RATE}]))", "e2e")],
                 unit="s", w=16)
    b.row("Load and errors")
    b.timeseries("Running and waiting requests",
                 [(f"sum by (instance) (switchyard_num_requests_running{{{SEL}}})", "running {{instance}}"),
                  (f"sum by (instance) (switchyard_num_requests_waiting{{{SEL}}})", "waiting {{instance}}")],
                 description="Requests in a running batch, and admitted requests waiting for a slot or KV pages.")
    b.timeseries("Errors by outcome",
                 [(f'sum by (outcome) (rate(switchyard_requests_total{{{SEL}, outcome!="ok"}}[{RATE}]))',
                   "{{outcome}}"),
                  (f"sum(rate(switchyard_transport_errors_total{{{SEL}}}[{RATE}]))", "transport errors")],
                 unit="ops", description="Failed, cancelled, rejected and timed-out requests per second, "
                                         "and transport errors (see Switchyard / KV and transport).")
    return b


def experts():
    layer_sel = f'{SEL}, layer=~"$layer"'
    b = Board("switchyard-experts", "Switchyard / Experts and balancing",
              "Expert load per MoE layer, placement balancedness and rebalancing (EPLB).",
              ["experts", "eplb"],
              extra_vars=[var("layer", "MoE layer",
                              'label_values(switchyard_expert_tokens_total{cluster=~"$cluster"}, layer)')],
              annotations=[{"name": "Placement epoch changes", "datasource": DS, "enable": True, "hide": False,
                            "iconColor": "purple", "refId": "epoch", "titleFormat": "placement epoch change",
                            "textFormat": "{{instance}}", "step": "10s",
                            "expr": f"changes(switchyard_placement_epoch{{{SEL}}}[1m]) > 0"}])
    b.row("Expert load")
    b.panel("table", "Expert heat map (tokens/s, layer × expert)",
            [f"sum by (layer, expert) (rate(switchyard_expert_tokens_total{{{layer_sel}}}[5m]))"],
            w=24, h=12, instant=True, unit="short",
            description="Tokens routed to each logical expert (columns) of each MoE layer (rows), per second "
                        "over the last 5 minutes. Hot cells are candidates for replication.",
            transformations=[{"id": "groupingToMatrix", "options": {
                "rowField": "layer", "columnField": "expert", "valueField": "Value", "emptyValue": "zero"}}],
            defaults={"custom": {"cellOptions": {"type": "color-background", "mode": "gradient"},
                                 "align": "center"},
                      "color": {"mode": "continuous-GrYlRd"}, "decimals": 0},
            options={"showHeader": True, "cellHeight": "sm"})
    b.panel("heatmap", "Expert load over time (selected layers)",
            [(f"sum by (expert) (rate(switchyard_expert_tokens_total{{{layer_sel}}}[{RATE}]))", "{{expert}}")],
            w=24, h=10, description="One row per logical expert, summed over the selected layers.",
            options={"calculate": False, "yAxis": {"axisPlacement": "left"},
                     "color": {"mode": "scheme", "scheme": "Oranges", "steps": 64},
                     "cellGap": 1, "rowsFrame": {"layout": "auto"}, "tooltip": {"show": True, "yHistogram": False},
                     "legend": {"show": True}})
    b.timeseries("Physical slot load",
                 [(f"sum by (host, slot) (switchyard_expert_slot_load_tokens{{{SEL}}})", "{{host}}/{{slot}}")],
                 w=24, description="Tokens per second each physical expert slot of each host handled over the "
                                   "load window.",
                 options={"legend": {"displayMode": "hidden", "placement": "bottom", "showLegend": False},
                          "tooltip": {"mode": "multi", "sort": "desc"}})
    b.row("Balancing")
    b.timeseries("Balancedness per layer",
                 [(f"min by (layer) (switchyard_eplb_balancedness{{{layer_sel}}})", "layer {{layer}}")],
                 unit="percentunit", defaults={"min": 0, "max": 1},
                 description="Mean over max of per-slot load in each MoE layer (1 = perfectly balanced).")
    b.timeseries("Worst and mean balancedness",
                 [(f"min(switchyard_eplb_balancedness{{{layer_sel}}})", "worst layer"),
                  (f"avg(switchyard_eplb_balancedness{{{layer_sel}}})", "mean over layers")],
                 unit="percentunit", defaults={"min": 0, "max": 1})
    b.timeseries("Rebalance rounds",
                 [(f"sum by (outcome) (increase(switchyard_eplb_rearrangements_total{{{SEL}}}[{RATE}]))",
                   "{{outcome}}")],
                 w=8, description="Rebalance rounds by outcome (completed, failed, aborted).")
    b.timeseries("Expert moves",
                 [(f"sum(increase(switchyard_eplb_expert_moves_total{{{SEL}}}[{RATE}]))", "replicas moved")],
                 w=8)
    b.timeseries("Bytes moved",
                 [(f"sum(rate(switchyard_eplb_moved_bytes_total{{{SEL}}}[{RATE}]))", "weights")],
                 w=8, unit="Bps")
    latency_panel(b, "Rebalance round duration", "switchyard_eplb_rearrangement_seconds",
                  "One rebalance round, plan to epoch switch.", w=12)
    b.timeseries("Placement epoch",
                 [(f"max by (instance) (switchyard_placement_epoch{{{SEL}}})", "{{instance}}")],
                 description="Nodes that disagree for long are behind on a placement switch.",
                 defaults={"decimals": 0})
    return b


def kv_transport():
    b = Board("switchyard-kv-transport", "Switchyard / KV cache and transport",
              "Latent-cache pages, prefix cache, multi-token prediction, transport and MoE dispatch/combine.",
              ["kv", "transport"])
    b.row("KV cache")
    b.timeseries("KV pages used and free",
                 [(f"sum by (instance) (switchyard_kv_pages_used{{{SEL}}})", "used {{instance}}"),
                  (f"sum by (instance) (switchyard_kv_pages_free{{{SEL}}})", "free {{instance}}")],
                 w=8, description="Latent-cache pages (64 tokens each) on decode nodes.")
    b.timeseries("KV utilisation",
                 [(f"sum by (instance) (switchyard_kv_pages_used{{{SEL}}}) / (sum by (instance) "
                   f"(switchyard_kv_pages_used{{{SEL}}}) + sum by (instance) (switchyard_kv_pages_free{{{SEL}}}))",
                   "{{instance}}")],
                 w=8, unit="percentunit", defaults={"min": 0, "max": 1})
    b.timeseries("Prefix cache hit rate",
                 [(f"sum(rate(switchyard_prefix_cache_hits_tokens_total{{{SEL}}}[{RATE}])) / "
                   f"sum(rate(switchyard_prefix_cache_queries_tokens_total{{{SEL}}}[{RATE}]))", "hit rate")],
                 w=8, unit="percentunit", defaults={"min": 0, "max": 1},
                 description="Prompt tokens found in the prefix cache over prompt tokens looked up.")
    b.row("Multi-token prediction")
    b.timeseries("MTP acceptance rate",
                 [(f"sum(rate(switchyard_mtp_accepted_tokens_total{{{SEL}}}[{RATE}])) / "
                   f"sum(rate(switchyard_mtp_draft_tokens_total{{{SEL}}}[{RATE}]))", "acceptance")],
                 unit="percentunit", defaults={"min": 0, "max": 1},
                 description="Drafted tokens accepted by verification over tokens drafted.")
    b.timeseries("MTP tokens/s",
                 [(f"sum(rate(switchyard_mtp_draft_tokens_total{{{SEL}}}[{RATE}]))", "drafted"),
                  (f"sum(rate(switchyard_mtp_accepted_tokens_total{{{SEL}}}[{RATE}]))", "accepted")])
    b.row("Transport")
    b.timeseries("Messages/s per peer",
                 [(f"sum by (peer, direction) (rate(switchyard_transport_messages_total{{{SEL}}}[{RATE}]))",
                   "{{peer}} {{direction}}")], w=8)
    b.timeseries("Bytes/s per peer",
                 [(f"sum by (peer, direction) (rate(switchyard_transport_bytes_total{{{SEL}}}[{RATE}]))",
                   "{{peer}} {{direction}}")], w=8, unit="Bps")
    b.timeseries("Transport errors per peer",
                 [(f"sum by (peer, kind) (increase(switchyard_transport_errors_total{{{SEL}}}[{RATE}]))",
                   "{{peer}} {{kind}}")], w=8, description="send_failed and bad_frame, per peer.")
    b.row("MoE dispatch and combine")
    latency_panel(b, "Dispatch latency", "switchyard_moe_dispatch_seconds",
                  "Time to dispatch one layer's tokens to their expert hosts.", w=12)
    latency_panel(b, "Combine latency", "switchyard_moe_combine_seconds",
                  "Time to combine one layer's expert outputs back.", w=12)
    b.timeseries("Dispatch p99 per node",
                 [(hq(0.99, "switchyard_moe_dispatch_seconds", "instance"), "{{instance}}")], unit="s",
                 description="A node far above the others is a straggler.")
    b.timeseries("Combine p99 per node",
                 [(hq(0.99, "switchyard_moe_combine_seconds", "instance"), "{{instance}}")], unit="s")
    return b


def nodes():
    b = Board("switchyard-nodes", "Switchyard / Nodes",
              "Node liveness, peer connection states and refused frames.", ["nodes"])
    b.row("Nodes")
    b.stat("Nodes up", f"sum(switchyard_node_up{{{SEL}}})", w=6)
    b.stat("Scrape targets down", f'count(up{{job="switchyard", {SEL}}} == 0) or vector(0)', w=6,
           defaults={"thresholds": {"mode": "absolute", "steps": [
               {"color": "green", "value": None}, {"color": "red", "value": 1}]}})
    b.stat("Peers not ready", f'sum(switchyard_node_peers{{{SEL}, state!="ready"}}) or vector(0)', w=6,
           defaults={"thresholds": {"mode": "absolute", "steps": [
               {"color": "green", "value": None}, {"color": "orange", "value": 1}]}})
    b.stat("Bad frames (1h)", f"sum(increase(switchyard_node_bad_frames_total{{{SEL}}}[1h]))", w=6)
    b.panel("table", "Nodes", [f"switchyard_node_up{{{SEL}}}"], w=24, h=7, instant=True,
            description="One row per node: name, roles and whether it runs (1).",
            transformations=[{"id": "organize", "options": {
                "excludeByName": {"Time": True, "__name__": True},
                "renameByName": {"Value": "up"}}}],
            defaults={"custom": {"cellOptions": {"type": "color-text"}},
                      "mappings": [{"type": "value", "options": {
                          "0": {"text": "down", "color": "red"}, "1": {"text": "up", "color": "green"}}}]})
    b.row("Peers")
    b.timeseries("Peers by state",
                 [(f"sum by (state) (switchyard_node_peers{{{SEL}}})", "{{state}}")],
                 description="Configured peers by connection state (waiting, connected, hello, ready, left, "
                             "lost), summed over nodes.",
                 options={"legend": {"displayMode": "table", "placement": "right", "calcs": ["lastNotNull"]},
                          "tooltip": {"mode": "multi", "sort": "desc"}},
                 defaults={"custom": {"stacking": {"mode": "normal"}, "fillOpacity": 30}})
    b.timeseries("Peers not ready per node",
                 [(f'sum by (instance, state) (switchyard_node_peers{{{SEL}, state!="ready"}})',
                   "{{instance}} {{state}}")])
    b.row("Frames")
    b.timeseries("Bad frames per node",
                 [(f"sum by (instance) (rate(switchyard_node_bad_frames_total{{{SEL}}}[{RATE}]))", "{{instance}}")],
                 unit="ops", description="Frames the wire decoder refused (malformed, wrong kind or version).")
    b.timeseries("Unrouted frames per node",
                 [(f"sum by (instance) (rate(switchyard_node_unrouted_frames_total{{{SEL}}}[{RATE}]))",
                   "{{instance}}")],
                 unit="ops", description="Valid messages of a kind no actor on the node takes; dropped.")
    return b


BOARDS = {"overview": overview, "experts": experts, "kv-transport": kv_transport, "nodes": nodes}


def main(argv):
    if len(argv) != 2:
        sys.stderr.write("usage: generate.py OUTPUT_DIR\n")
        return 2
    os.makedirs(argv[1], exist_ok=True)
    for name, make in BOARDS.items():
        with open(os.path.join(argv[1], f"switchyard-{name}.json"), "w", encoding="utf-8") as f:
            json.dump(make().json(), f, indent=2, sort_keys=False)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
