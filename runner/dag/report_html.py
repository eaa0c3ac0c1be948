"""runs/<recipe>/report.html: the run report as one self-contained page (no network: inline CSS, SVG drawn
by inline JS, and a Content-Security-Policy that forbids any fetch): the row funnel, loss curves per
training step, the forgetting table as a heat map, the few-shot table, the gates, samples before and
after, and a rendered training row with its trained tokens highlighted.

Everything shown comes from one JSON document embedded in the page, which the script draws with
textContent and createElementNS only (never innerHTML): recipe strings and data rows are untrusted, and
`<`, `>` and `&` are written as JSON escapes so no text can close the script element. Each chart marks its
container data-drawn="yes" (or "empty", with a line saying why) once drawn, and an error anywhere is
collected in body[data-errors]: tests/test_report_html.py reads both back from headless Chromium."""
from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from ..paths import publish_files
from ..recipe.secrets import scrub

TRAINED_ROWS = 2          # rendered rows shown per stage
TRAINED_TOKENS = 400      # of each, at most this many tokens

_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:3px 8px;text-align:right;
vertical-align:top}th{background:#f4f4f4}td.l,th.l{text-align:left}.pass{color:#176117}.fail{color:#b00;
font-weight:bold}.pending{color:#888}.empty{color:#888;font-style:italic}pre{white-space:pre-wrap;
background:#fafafa;border:1px solid #eee;padding:.6em}mark{background:#ffe08a}.prompt{color:#777}
.sample{white-space:pre-wrap;text-align:left;max-width:420px}svg text{font:11px system-ui,sans-serif}
"""

_SECTIONS = (("funnel", "Row funnel", "Rows into and out of each data step (bar: rows out; grey: rows in)."),
             ("curves", "Loss curves", "Training loss per logged step, one line per training step."),
             ("forgetting", "Forgetting (eval loss by stage and source)",
              "Each column coloured from its lowest (green) to its highest (red) loss."),
             ("fewshot", "Few-shot adaptation on held-out tasks", "Mean ± sd over tasks × seeds; gain = before − after."),
             ("gates", "Gates", "evaluate.gates, checked after each stage."),
             ("samples", "Samples before and after", "Generations for evaluate.generate.prompts, per evaluation."),
             ("trained", "What is trained", "The first rendered training rows of each stage: highlighted tokens "
                                            "carry labels (the model learns them), the rest is context."))

_JS = r"""
(function(){
var D=JSON.parse(document.getElementById('report-data').textContent),NS='http://www.w3.org/2000/svg';
var COLORS=['#1f77b4','#d62728','#2ca02c','#9467bd','#ff7f0e','#17becf','#8c564b','#e377c2'];
function el(t,a,x){var e=document.createElement(t);for(var k in a||{})e.setAttribute(k,a[k]);if(x!=null)e.textContent=String(x);return e}
function sv(t,a,x){var e=document.createElementNS(NS,t);for(var k in a||{})e.setAttribute(k,a[k]);if(x!=null)e.textContent=String(x);return e}
function fmt(v){if(v==null)return'';if(typeof v!=='number')return String(v);if(!isFinite(v))return String(v);
 return Number.isInteger(v)?v.toLocaleString('en'):v.toPrecision(4)}
function box(id){return document.getElementById('c-'+id)}
function empty(id,why){var b=box(id);b.appendChild(el('p',{'class':'empty'},why));b.setAttribute('data-drawn','empty')}
function drawn(id){box(id).setAttribute('data-drawn','yes')}
function table(id,head,rows,cls){var t=el('table'),tr=el('tr');head.forEach(function(h,i){tr.appendChild(el('th',{'class':i?'':'l'},h))});
 t.appendChild(tr);rows.forEach(function(r){var tr=el('tr');r.forEach(function(c,i){var td=(c&&c.node)?c.node:el('td',{'class':i?'':'l'},fmt(c));
 if(c&&c.style)td.setAttribute('style',c.style);if(c&&c.cls)td.setAttribute('class',c.cls);tr.appendChild(td)});t.appendChild(tr)});
 box(id).appendChild(t);return t}
function funnel(){var f=D.funnel;if(!f.length)return empty('funnel','no data step ran');
 var top=Math.max.apply(null,f.map(function(s){return Math.max(s.rows_in||0,s.rows_out||0,1)})),W=360,L=170,H=22;
 var s=sv('svg',{width:L+W+260,height:f.length*H+6,role:'img'});
 f.forEach(function(x,i){var y=i*H+3;s.appendChild(sv('text',{x:0,y:y+14},x.name));
  s.appendChild(sv('rect',{x:L,y:y,width:W*(x.rows_in||0)/top,height:H-6,fill:'#ddd'}));
  s.appendChild(sv('rect',{x:L,y:y+3,width:W*(x.rows_out||0)/top,height:H-12,fill:'#1f77b4','class':'bar'}));
  var d=Object.keys(x.dropped).map(function(k){return k+' '+fmt(x.dropped[k])}).join(', ');
  s.appendChild(sv('text',{x:L+W+6,y:y+14},fmt(x.rows_in)+' → '+fmt(x.rows_out)+(d?'  (dropped: '+d+')':'')))});
 box('funnel').appendChild(s);drawn('funnel')}
function curves(){var c=D.curves.filter(function(x){return x.points.length});if(!c.length)return empty('curves','no training step logged a loss');
 var pts=[].concat.apply([],c.map(function(x){return x.points})),W=620,H=240,P=48;
 var xs=pts.map(function(p){return p[0]}),ys=pts.map(function(p){return p[1]});
 var x0=Math.min.apply(null,xs),x1=Math.max.apply(null,xs),y0=Math.min.apply(null,ys),y1=Math.max.apply(null,ys);
 if(x1===x0)x1=x0+1;if(y1===y0){y1+=.5;y0-=.5}
 function X(v){return P+(W-P-10)*(v-x0)/(x1-x0)}function Y(v){return 10+(H-P)*(1-(v-y0)/(y1-y0))}
 var s=sv('svg',{width:W+200,height:H,role:'img'});
 s.appendChild(sv('line',{x1:P,y1:H-P+10,x2:W-10,y2:H-P+10,stroke:'#888'}));s.appendChild(sv('line',{x1:P,y1:10,x2:P,y2:H-P+10,stroke:'#888'}));
 s.appendChild(sv('text',{x:2,y:14},fmt(y1)));s.appendChild(sv('text',{x:2,y:H-P+10},fmt(y0)));
 s.appendChild(sv('text',{x:P,y:H-P+26},'step '+fmt(x0)));s.appendChild(sv('text',{x:W-60,y:H-P+26},'step '+fmt(x1)));
 c.forEach(function(x,i){var col=COLORS[i%COLORS.length];
  s.appendChild(sv('polyline',{fill:'none',stroke:col,'stroke-width':2,'class':'curve',points:x.points.map(function(p){return X(p[0])+','+Y(p[1])}).join(' ')}));
  x.points.forEach(function(p){s.appendChild(sv('circle',{cx:X(p[0]),cy:Y(p[1]),r:2.5,fill:col}))});
  s.appendChild(sv('text',{x:W+10,y:20+16*i,fill:col},x.name))});
 box('curves').appendChild(s);drawn('curves')}
function forgetting(){var f=D.forgetting;if(!f.rows.length)return empty('forgetting','no evaluation ran');
 var lo=f.sources.map(function(_,j){return Math.min.apply(null,f.rows.map(function(r){return r[1][j]==null?Infinity:r[1][j]}))});
 var hi=f.sources.map(function(_,j){return Math.max.apply(null,f.rows.map(function(r){return r[1][j]==null?-Infinity:r[1][j]}))});
 table('forgetting',['stage'].concat(f.sources),f.rows.map(function(r){return [r[0]].concat(r[1].map(function(v,j){
  if(v==null)return v;var t=hi[j]>lo[j]?(v-lo[j])/(hi[j]-lo[j]):0;return {node:el('td',{'class':'heat',style:'background:hsl('+
  Math.round(120*(1-t))+',65%,78%)'},fmt(v))}}))}));drawn('forgetting')}
function fewshot(){var t=D.few_shot;if(!t.length)return empty('fewshot','this recipe has no few-shot evaluation (a meta recipe has)');
 table('fewshot',['model','shots','n','loss before','loss after','gain'],t.map(function(r){return [r.model,r.shots,r.n,r.loss_before,
  fmt(r.loss_after)+' ± '+fmt(r.loss_after_sd),fmt(r.gain)+' ± '+fmt(r.gain_sd)]}));drawn('fewshot')}
function gates(){var g=D.gates;if(!g)return empty('gates','this recipe has no evaluate.gates');
 box('gates').appendChild(el('p',{'class':g.status},'status: '+g.status+' ('+g.passed+' passed, '+g.failed+' failed, '+g.pending+' pending)'));
 table('gates',['metric','stage','value','bound','status'],g.checks.map(function(c){var b=[];if(c.min!=null)b.push('≥ '+fmt(c.min));
  if(c.max!=null)b.push('≤ '+fmt(c.max));return [c.metric,c.stage,c.value==null&&c.status==='fail'?'no value':c.value,b.join(', '),
  {node:el('td',{'class':c.status},c.status)}]}));drawn('gates')}
function samples(){var s=D.samples;if(!s.rows.length)return empty('samples','no evaluate.generate.prompts');
 table('samples',['prompt'].concat(s.stages),s.rows.map(function(r){return [{node:el('td',{'class':'sample'},r.prompt)}].concat(
  r.outputs.map(function(o){return o==null?'':{node:el('td',{'class':'sample'},o.output+(o.stopped?'':' [no end-of-turn]'))}}))}));drawn('samples')}
function trained(){var t=D.trained;if(!t.rows.length)return empty('trained',t.why||'no rendered rows');
 t.rows.forEach(function(r){box('trained').appendChild(el('h3',null,r.stage+': row '+r.id));var p=el('pre');
  r.spans.forEach(function(s){p.appendChild(s[1]?el('mark',null,s[0]):el('span',{'class':'prompt'},s[0]))});
  if(r.cut)p.appendChild(el('span',{'class':'empty'},' … (cut at '+r.cut+' tokens)'));box('trained').appendChild(p)});drawn('trained')}
[funnel,curves,forgetting,fewshot,gates,samples,trained].forEach(function(f){f()});
document.body.setAttribute('data-ready','yes');
})();
"""

_CATCH = ("window.addEventListener('error',function(e){var b=document.body;"
          "b.setAttribute('data-errors',(b.getAttribute('data-errors')||'')+String(e.message)+'\\n')});")


def script_json(data: Any) -> str:
    """JSON that is safe inside <script>: `<`, `>` and `&` as JSON escapes, so no string can end the element."""
    text = json.dumps(data, ensure_ascii=False, allow_nan=False, default=str)
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


def page(data: dict) -> str:
    title = html.escape(f"Run report: {data['recipe']}")
    sections = "".join(f'<h2>{html.escape(h)}</h2><p class="empty">{html.escape(about)}</p>'
                       f'<div class="chart" id="c-{key}" data-chart="{key}"></div>\n' for key, h, about in _SECTIONS)
    csp = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'"
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{csp}">'
            f'<meta name="viewport" content="width=device-width"><title>{title}</title><style>{_CSS}</style></head>\n'
            f'<body><script>{_CATCH}</script><h1>{title}</h1>\n{sections}'
            f'<script type="application/json" id="report-data">{script_json(data)}</script>\n'
            f'<script>{_JS}</script></body></html>\n')


def _finite(v: Any) -> Any:
    """NaN and infinities are no JSON: shown as text (at any depth)."""
    if isinstance(v, float) and (v != v or v in (float("inf"), float("-inf"))):
        return str(v)
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_finite(x) for x in v]
    return v


def _samples(report: dict) -> dict:
    evals = ([("before", report["before"])] if report.get("before") else []) + \
        [(e["name"], ((e.get("metrics") or {}).get("eval") or {})) for e in report["stages"]]
    evals = [(name, {s["prompt"]: s for s in m.get("samples") or []}) for name, m in evals if m]
    prompts = list(dict.fromkeys(p for _, by in evals for p in by))
    return {"stages": [name for name, _ in evals],
            "rows": [{"prompt": p, "outputs": [by.get(p) for _, by in evals]} for p in prompts]}


def data_of(report: dict, curves: list[dict], trained: dict) -> dict:
    """The page's JSON document, from report.json and what only the records have (loss history, rendered rows)."""
    rows = report.get("forgetting") or {}
    sources = sorted({s for row in rows.values() for s in row})
    summary = report.get("few_shot_summary") or {}
    return {"recipe": report["recipe"],
            "funnel": [{"name": s["name"], "rows_in": s["rows_in"], "rows_out": s["rows_out"],
                        "dropped": s["dropped"]} for s in report["steps"] if s["rows_in"] is not None],
            "curves": curves,
            "forgetting": {"sources": sources, "rows": [[stage, [row.get(s) for s in sources]]
                                                        for stage, row in rows.items()]},
            "few_shot": list(summary.get("table", [])),
            "gates": report.get("gates"), "samples": _samples(report), "trained": trained}


def loss_curves(records: list) -> list[dict]:
    """Every step whose result logged a training loss (its `history`: [{step, loss}])."""
    out = []
    for r in records:
        history = getattr(r.result, "history", None) or []
        points = [[h["step"], h["loss"]] for h in history if "step" in h and isinstance(h.get("loss"), (int, float))
                  and h["loss"] == h["loss"] and abs(h["loss"]) != float("inf")]   # a diverged step is no point
        if points:
            out.append({"name": r.name, "points": points})
    return out


def trained_rows(recipe, records: list, secrets: tuple[str, ...]) -> dict:
    """The first rendered training rows of each stage (a step whose artifact holds train.jsonl with labels),
    decoded in runs of trained and untrained tokens."""
    found = [(r.stage, Path(r.artifact) / "train.jsonl") for r in records
             if r.stage and r.artifact and r.status != "failed" and (Path(r.artifact) / "train.jsonl").is_file()]
    rows = []
    for stage, path in found:
        with open(path, encoding="utf-8") as f:
            heads = [json.loads(line) for _, line in zip(range(TRAINED_ROWS), f)]
        rows += [{"stage": stage, **row} for row in heads if "labels" in row and "input_ids" in row]
    if not rows:
        return {"rows": []}
    if recipe.model.trust_remote_code:
        return {"rows": [], "why": "model.trust_remote_code: the report does not load the model's own tokenizer code"}
    from ..chat import tokenizer_for
    from ..errors import RecipeError
    try:
        tok = tokenizer_for(recipe.model.base, recipe.file.parent, trust_remote_code=False)
    except (RecipeError, OSError, ValueError) as e:
        # the rows are cached but the tokenizer is gone (an offline machine): the report loses one section, the
        # run does not fail over it
        return {"rows": [], "why": scrub(f"the tokenizer could not be loaded: {e}", secrets)[:300]}
    return {"rows": [_spans(tok, r, secrets) for r in rows]}


def _spans(tok, row: dict, secrets: tuple[str, ...]) -> dict:
    ids, labels = row["input_ids"][:TRAINED_TOKENS], row["labels"][:TRAINED_TOKENS]
    spans: list[list] = []
    start = 0
    for i in range(1, len(ids) + 1):
        if i == len(ids) or (labels[i] != -100) != (labels[start] != -100):
            text = scrub(tok.decode(ids[start:i], skip_special_tokens=False), secrets)
            spans.append([text, labels[start] != -100])
            start = i
    cut = len(row["input_ids"]) if len(row["input_ids"]) > TRAINED_TOKENS else None
    return {"stage": row["stage"], "id": str(row.get("id")), "spans": spans, "cut": cut}


def write_html(report: dict, recipe, records: list, run_dir: Path, secrets: tuple[str, ...]) -> None:
    """report.html beside report.md, through the run directory's one publish path."""
    data = _finite(data_of(report, loss_curves(records), trained_rows(recipe, records, secrets)))
    publish_files(run_dir, "report.html", {"report.html": page(data).encode("utf-8")})
