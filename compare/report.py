"""``RUN/compare/summary.json`` and ``RUN/compare/report.md`` (with PNG plots beside it).

The report is written from the section files alone (``weights.json``, ``activations.json``,
``emotions.json``, ``steering.json``, ``features.json``) and the section statuses, so it can be rebuilt
without the models (:func:`write_report`). Plots are plotly figures exported as PNG through ``kaleido`` (which drives a
local Chrome/Chromium); without it the report says so and lists the numbers as tables only.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from psylens.compare import artifacts as art
from psylens.io import atomic_write_text

__all__ = ["SectionStatus", "build_summary", "write_report", "plots_available", "render_markdown"]

log = logging.getLogger(__name__)

SectionStatus = dict  # {"status": "done"|"skipped"|"failed", "reason": str|None, "headline": dict}


def plots_available() -> str | None:
    """``None`` when PNG export works here, else why not (one line)."""
    try:
        import kaleido  # noqa: F401
        import plotly  # noqa: F401
    except ImportError as e:
        return f"PNG plots need plotly and kaleido ({e.name} is missing): pip install kaleido (it drives a local Chrome/Chromium)"
    if _find_browser() is None:
        return ("PNG plots need a Chrome/Chromium browser for kaleido and none was found: install one (e.g. "
                "`apt-get install chromium`), set BROWSER_PATH to it, or run `plotly_get_chrome`")
    return None


def _find_browser() -> str | None:
    """The Chrome/Chromium executable kaleido would drive (``BROWSER_PATH`` first), or ``None``."""
    try:
        from choreographer.browsers.chromium import Chromium
    except ImportError:  # another kaleido back end: let the export itself decide
        return "unknown"
    return Chromium.find_browser(skip_local=False)


def build_summary(run: Any, sections: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The summary dict: both models, and every requested section's status, reason and headline numbers."""
    models = run.models
    return {
        "schema_version": art.SCHEMA_VERSION,
        "models": {k: models.get(k) for k in art.MODEL_NAMES},
        "sections": {name: sections[name] for name in art.SECTIONS if name in sections},
    }


# --------------------------------------------------------------------------------------------
# plots
# --------------------------------------------------------------------------------------------
def _save(fig: Any, run: Any, name: str) -> str:
    rel = art.plot_file(name)
    fig.update_layout(width=900, height=450, margin=dict(l=60, r=20, t=50, b=50), template="plotly_white")
    fig.write_image(str(run.file(rel)))
    return Path(rel).name


def _plots(run: Any) -> tuple[dict[str, str], str | None]:
    why = plots_available()
    if why is not None:
        return {}, why
    import plotly.graph_objects as go

    out: dict[str, str] = {}
    try:
        if run.has(art.WEIGHTS):
            rows = run.read_json(art.WEIGHTS)
            if rows:
                mods = sorted({r["module"].rsplit(".", 1)[-1] if "." in r["module"] else r["module"] for r in rows})
                layers = sorted({r["layer"] for r in rows})
                z = [[0.0] * len(layers) for _ in mods]
                for r in rows:
                    z[mods.index(r["module"].rsplit(".", 1)[-1])][layers.index(r["layer"])] = r["relative_norm"]
                fig = go.Figure(go.Heatmap(z=z, x=layers, y=mods, colorscale="Viridis", colorbar=dict(title="‖ΔW‖/‖W‖")))
                fig.update_layout(title="Weight change by layer and module", xaxis_title="layer")
                out["weights"] = _save(fig, run, "weights_map")
        if run.has(art.ACTIVATIONS):
            res = run.read_json(art.ACTIVATIONS)
            fig = go.Figure()
            for name, s in res.get("sets", {}).items():
                xs = [r["layer"] for r in s["layers"]]
                fig.add_scatter(x=xs, y=[r["relative"] for r in s["layers"]], name=f"{name}: ‖mean diff‖ / ‖base‖")
                fig.add_scatter(x=xs, y=[1 - r["token_cosine"] for r in s["layers"]], name=f"{name}: 1 − token cosine",
                                line=dict(dash="dot"))
            fig.update_layout(title="Activation difference by layer (resid_post)", xaxis_title="layer")
            out["activations"] = _save(fig, run, "activation_diff")
            if res.get("layer_kl"):
                rows = res["layer_kl"]["layers"]
                fig = go.Figure(go.Scatter(
                    x=[r["layer"] for r in rows], y=[r["kl"] for r in rows], mode="lines+markers",
                    error_y=dict(type="data", symmetric=False, array=[r["kl_hi"] - r["kl"] for r in rows],
                                 arrayminus=[r["kl"] - r["kl_lo"] for r in rows])))
                fig.update_layout(title="Logit-lens KL(base ‖ tuned) by layer (95% CI)", xaxis_title="layer",
                                  yaxis_title="nats")
                out["layer_kl"] = _save(fig, run, "layer_kl")
        if run.has(art.EMOTIONS):
            res = run.read_json(art.EMOTIONS)
            p = res["probes"]
            fig = go.Figure()
            for name in art.MODEL_NAMES:
                fig.add_scatter(x=p[name]["layers"], y=p[name]["accuracy"], name=f"{name} probe (CV)")
            fig.add_scatter(x=[r["layer"] for r in p["transfer"]], y=[r["base_on_tuned"] for r in p["transfer"]],
                            name="base probe on tuned (held out)", line=dict(dash="dash"))
            fig.add_hline(y=p["base"]["chance"], line=dict(color="gray", dash="dot"), annotation_text="chance")
            fig.update_layout(title="Emotion probe accuracy by layer", xaxis_title="layer", yaxis_title="accuracy")
            out["probes"] = _save(fig, run, "probes")
            cs = sorted(res["concepts"]["concepts"], key=lambda r: r["change"])
            fig = go.Figure(go.Bar(
                x=[r["change"] for r in cs], y=[r["concept"] for r in cs], orientation="h",
                error_x=dict(type="data", symmetric=False, array=[r["change_ci95"][1] - r["change"] for r in cs],
                             arrayminus=[r["change"] - r["change_ci95"][0] for r in cs])))
            fig.update_layout(title="Concept projection at the assistant turn: tuned − base (95% CI)", height=700)
            out["concepts"] = _save(fig, run, "concepts")
        if run.has(art.FEATURES):
            labs = run.read_json(art.FEATURES).get("labels") or {}
            if labs:
                names = list(labs)
                fig = go.Figure(go.Bar(
                    x=[labs[k]["difference"] for k in names], y=names, orientation="h",
                    error_x=dict(type="data", symmetric=False,
                                 array=[labs[k]["difference_ci95"][1] - labs[k]["difference"] for k in names],
                                 arrayminus=[labs[k]["difference"] - labs[k]["difference_ci95"][0] for k in names])))
                fig.update_layout(title="Behaviour-label steps per trace: tuned − base (95% CI)")
                out["features"] = _save(fig, run, "feature_labels")
    except Exception as e:  # a broken browser must not lose the numbers
        log.warning("PNG export failed: %s", e)
        return out, f"PNG export failed ({type(e).__name__}: {e}); the tables below hold every number"
    return out, None


# --------------------------------------------------------------------------------------------
# markdown
# --------------------------------------------------------------------------------------------
def _f(x: Any, digits: int = 3) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.{digits}g}"
    return str(x)


def _ci(pair: Any) -> str:
    return "–" if not pair else f"[{_f(pair[0])}, {_f(pair[1])}]"


def render_markdown(run: Any, summary: dict[str, Any], plots: dict[str, str], plot_note: str | None) -> str:
    """The report's text (see :func:`write_report`)."""
    m = summary["models"]
    lines = ["# Base vs tuned", ""]
    for name in art.MODEL_NAMES:
        rec = m.get(name) or {}
        adapter = f" + adapter `{rec['adapter']}`" if rec.get("adapter") else ""
        lines.append(f"- **{name}**: `{rec.get('spec')}`{adapter} (fingerprint `{rec.get('fingerprint')}`)")
    lines.append("")
    if plot_note:
        lines += [f"> Plots: {plot_note}", ""]
    for name, sec in summary["sections"].items():
        lines.append(f"## {name.capitalize()}")
        lines.append("")
        if sec["status"] != "done":
            lines += [f"*{sec['status']}*: {sec.get('reason')}", ""]
            continue
        lines += _SECTION_TEXT[name](run, sec.get("headline") or {}, plots) if name in _SECTION_TEXT else []
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _weights_md(run: Any, h: dict[str, Any], plots: dict[str, str]) -> list[str]:
    rows = run.read_json(art.WEIGHTS)
    out = [
        f"{h.get('modules_changed')} of {h.get('modules')} linear modules changed; "
        f"{_f(h.get('changed_parameter_fraction'))} of their parameters changed beyond the dtype tolerance; "
        f"median effective rank of ΔW {_f(h.get('median_effective_rank'))}; mean overlap with W's principal directions "
        f"{_f(h.get('mean_principal_overlap'))} (random directions: ≈{_f(h.get('principal_overlap_chance'))}). "
        f"ΔW {'read exactly from the LoRA adapter (B·A·scale)' if h.get('exact_lora') else 'from the weights (tuned − base)'}.",
        "",
    ]
    if plots.get("weights"):
        out += [f"![weight change map]({plots['weights']})", ""]
    out += ["| module | layer | ‖ΔW‖/‖W‖ | changed | eff. rank | principal overlap |", "|---|---|---|---|---|---|"]
    shown = [r for r in rows if r["relative_norm"] > 0][:15] or rows[:5]
    for r in shown:
        out.append(f"| `{r['module']}` | {r['layer']} | {_f(r['relative_norm'])} | {_f(r['changed_fraction'])} | "
                   f"{_f(r['effective_rank'])} | {_f(r['principal_overlap'])} |")
    if len(shown) < len(rows):
        out.append(f"\n({len(rows) - len(shown)} more modules in weights.json"
                   f"{'; every other module is unchanged' if len(shown) == h.get('modules_changed') else ''}.)")
    other = h.get("other_parameters_changed") or {}
    if other:
        out += ["", "Other parameters changed (relative norm): " + ", ".join(f"`{k}` {_f(v)}" for k, v in list(other.items())[:10])]
    return out


def _activations_md(run: Any, h: dict[str, Any], plots: dict[str, str]) -> list[str]:
    res = run.read_json(art.ACTIVATIONS)
    out = []
    for name, s in res.get("sets", {}).items():
        ranked = s["layers_ranked"][:5]
        out.append(f"- **{name}** ({s['n_texts']} texts, {s['n_tokens']} tokens): first changed layer "
                   f"{_f(s['first_changed_layer'])}; layers adding the most difference: {ranked or 'none'}")
    if plots.get("activations"):
        out += ["", f"![activation difference]({plots['activations']})"]
    if plots.get("layer_kl"):
        out += ["", f"![per-layer KL]({plots['layer_kl']})"]
    sets = res.get("sets", {})
    if sets:
        name, s = next(iter(sets.items()))
        out += ["", f"Per layer ({name}; contribution = what the layer itself adds to the mean difference, "
                "relative = over the base's mean residual norm):",
                "", "| layer | ‖mean diff‖ | 95% CI | relative | token cosine | contribution | relative contribution |",
                "|---|---|---|---|---|---|---|"]
        for r in s["layers"]:
            out.append(f"| {r['layer']} | {_f(r['mean_diff_norm'])} | {_ci(r['mean_diff_norm_ci95'])} | {_f(r['relative'])} | "
                       f"{_f(r['token_cosine'], 5)} | {_f(r['contribution'])} | {_f(r.get('relative_contribution'))} |")
    if "kl" in res:
        kl = res["kl"]
        out += ["", f"Per-token KL(tuned ‖ base) on task traces: mean {_f(kl['mean_kl'])} nats {_ci(kl['mean_kl_ci95'])}"
                + (f"; on the generated part {_f(kl.get('mean_kl_trace'))} {_ci(kl.get('mean_kl_trace_ci95'))}" if "mean_kl_trace" in kl else ""),
                "", "| KL | context | base next | tuned next |", "|---|---|---|---|"]
        for t in kl["top_positions"][:10]:
            ctx = t["context"].replace("\n", "⏎").replace("|", "\\|")
            out.append(f"| {_f(t['kl'])} | …{ctx} | `{t['base_next']!r}` | `{t['tuned_next']!r}` |")
    if res.get("layer_kl"):
        lk = res["layer_kl"]
        out += ["", f"Per-layer KL(base ‖ tuned) of each model's logit lens (its own final norm and unembedding on "
                f"resid_post; {lk['positions']}; `layer_kl.parquet`): first layer above float noise "
                f"{_f(lk['first_nonzero_layer'])}.", "", "| layer | KL (nats) | 95% CI |", "|---|---|---|"]
        for r in lk["layers"]:
            out.append(f"| {r['layer']} | {_f(r['kl'])} | {_ci([r['kl_lo'], r['kl_hi']])} |")
    if "lens" in res and h.get("lens_top_layer") is not None:
        layer = h["lens_top_layer"]
        row = res["lens"]["layers"][layer]
        out += ["", f"Activation-difference lens ({res['lens']['positions']}, layer {layer}, the top-ranked layer): "
                + ", ".join(f"`{t['token']!r}`" for t in row["tuned"][:10])]
    return out


def _emotions_md(run: Any, h: dict[str, Any], plots: dict[str, str]) -> list[str]:
    res = run.read_json(art.EMOTIONS)
    p, c = res["probes"], res["concepts"]
    tr = h.get("transfer_at_base_best_layer") or {}
    out = [
        f"Emotion probes (6 emotions, chance {_f(p['base']['chance'])}): base best {_f(p['base']['best_accuracy'])} at layer "
        f"{p['base']['best_layer']}, tuned best {_f(p['tuned']['best_accuracy'])} at layer {p['tuned']['best_layer']}. "
        f"Base probes on held-out scenarios at layer {tr.get('layer')}: {_f(tr.get('base_on_base'))} on base, "
        f"{_f(tr.get('base_on_tuned'))} on tuned (difference {_f(tr.get('difference'))} {_ci(tr.get('difference_ci95'))}). "
        f"Mean cosine of base and tuned emotion directions: {_f(h.get('mean_direction_cosine'))} "
        f"(random: 0 ± {_f(res['directions']['random_direction_sd'])}).",
        "",
    ]
    if plots.get("probes"):
        out += [f"![probe curves]({plots['probes']})", ""]
    out += [f"Concepts at the assistant turn ({c['n_tasks']} task prompts, layers {c['band'][0]}–{c['band'][-1]}): "
            f"rise {c['rises'] or 'none'}; fall {c['falls'] or 'none'} (interval excludes 0 and |change| beyond the "
            f"95th percentile of {c.get('n_random_directions')} random directions, {_f(c.get('random_direction_abs_change_q95'))}; "
            f"by the interval alone: {len(c.get('rises_interval_only', []))} rise, {len(c.get('falls_interval_only', []))} fall).", "",
            "| concept | change | 95% CI | in base SDs | beyond random |", "|---|---|---|---|---|"]
    for r in sorted(c["concepts"], key=lambda r: -r["change"]):
        out.append(f"| {r['concept']} | {_f(r['change'])} | {_ci(r['change_ci95'])} | {_f(r['change_in_base_sd'])} | "
                   f"{r.get('beyond_random')} |")
    if plots.get("concepts"):
        out += ["", f"![concept changes]({plots['concepts']})"]
    out += ["", f"Change vectors across task kinds: mean pairwise r = {_f(c['mean_kind_correlation'])} "
            f"{_ci(c.get('mean_kind_correlation_ci95'))}; concepts permuted (control): {_f(c['permuted_control_mean_r'])}."]
    return out


def _steering_md(run: Any, h: dict[str, Any], plots: dict[str, str]) -> list[str]:
    res = run.read_json(art.STEERING)
    used = res.get("steering") or {}
    if used.get("from") == "sweep":
        vecs = used.get("vectors") or {}
        how = ("The base model's picked steering vectors (`psylens steer sweep`, from "
               f"`{used.get('source_run')}`) steer both models, each at its own layer and alpha ("
               + ", ".join(f"{e} L{v.get('layer')} α {_f(v.get('alpha'))}" for e, v in vecs.items()) + ")")
    else:
        why = f"; {used['note']}" if used.get("note") else ""
        how = (f"The base model's story directions steer both models at layer {res['layer']} with the base's alpha "
               f"{_f(res['alpha'])}{why.rstrip('.')}")
    out = [f"{how} (gates: {', '.join(res.get('gates') or [res['gate']])}; feels_matrix on {res['n_contexts']} contexts).", "",
           "| model | gap (nats) | 95% CI | random-direction control | passed | rows won | columns won |",
           "|---|---|---|---|---|---|---|"]
    for name in art.MODEL_NAMES:
        g = res[name]
        out.append(f"| {name} | {_f(g['value'])} | {_ci(g.get('gap_ci95'))} | {_f(g['control'])} | {g['passed']} | "
                   f"{g.get('rows_won')} | {g.get('cols_won')} |")
    out += ["", "| emotion | own shift, base | own shift, tuned |", "|---|---|---|"]
    for e in res["emotions"]:
        out.append(f"| {e} | {_f(res['base']['own_shift'].get(e))} | {_f(res['tuned']['own_shift'].get(e))} |")
    out += ["", f"Own shift, tuned − base (paired over emotions): {_f(res['own_shift_difference'])} "
            f"{_ci(res['own_shift_difference_ci95'])} nats."]
    rb = res.get("read_back")
    if rb:
        out += ["", f"Read-back ({rb['n_prompts']} prompts × {len(res['emotions'])} emotions, {rb['max_new_tokens']} tokens): "
                "the steered text, re-read by the same model unsteered, projects higher on the target direction than "
                "the unsteered text (win rate; control: a random vector's text against the unsteered one).", "",
                "| model | win rate | 95% CI | vs random-vector text | random control | passed |", "|---|---|---|---|---|---|"]
        for name in art.MODEL_NAMES:
            g = rb[name]
            out.append(f"| {name} | {_f(g['value'])} | {_ci(g.get('ci95'))} | {_f(g.get('win_rate_vs_random'))} | "
                       f"{_f(g['control'])} | {g['passed']} |")
        out += ["", f"Read-back win rate, tuned − base (paired over emotion × prompt): {_f(rb['difference'])} "
                f"{_ci(rb['difference_ci95'])}."]
    return out


def _features_md(run: Any, h: dict[str, Any], plots: dict[str, str]) -> list[str]:
    res = run.read_json(art.FEATURES)
    tr, w = res["traces"], res["where"]
    sae = res.get("sae")
    out = [f"![behaviour labels]({plots['features']})", ""] if plots.get("features") else []
    out += [f"Both models traced the same {tr['n_traces']['base']} task samples (same seeds; {tr['max_new_tokens']} new "
           f"tokens): {tr['n_steps']['base']} base and {tr['n_steps']['tuned']} tuned steps. "
           + (f"Base step SAE `{sae['name']}` ({sae['site']}, layer {sae['layer']}, {sae['pooling']} pooling)."
              if sae else f"No step SAE in the run: the crosscoder reads {w['site']} at layer {w['layer']}."), "",
           "Behaviour labels, steps per trace (95% intervals paired over traces of the same task):", "",
           "| label | base | tuned | tuned − base | 95% CI | share of steps, tuned − base |", "|---|---|---|---|---|---|"]
    for lab, r in res["labels"].items():
        mark = " **≠ 0**" if r["excludes_zero"] else ""
        out.append(f"| {lab} | {_f(r['base'])} | {_f(r['tuned'])} | {_f(r['difference'])}{mark} | {_ci(r['difference_ci95'])} | "
                   f"{_f(r['share_difference'])} {_ci(r['share_difference_ci95'])} |")
    if res.get("diversity"):
        d, fr = res["diversity"], res["frequencies"]
        out += ["", f"Feature diversity (distinct SAE features a trace): base {_f(d['base'])}, tuned {_f(d['tuned'])}, "
                f"difference {_f(d['difference'])} {_ci(d['difference_ci95'])}. Firing frequency changed (interval excludes 0) "
                f"for {fr['n_changed']} of {fr['n_features']} features; up most: {fr['top_up'][:5] or 'none'}, down most: "
                f"{fr['top_down'][:5] or 'none'} (`feature_frequencies.parquet`)."]
    if run.has(art.CROSSCODER):
        cc = run.read_json(art.CROSSCODER)
        st, fit, c = cc["settings"], cc["fit"], cc["counts"]
        out += ["", f"BatchTopK crosscoder ({st['d_latent']} latents, k={st['k']}, {st['n_rows']} paired steps at layer "
                f"{st['layer']}; explained variance base {_f(fit['explained_variance']['base'])}, tuned "
                f"{_f(fit['explained_variance']['tuned'])}; dead {_f(fit['dead_fraction'])}): "
                f"**{cc['tuned_only']} tuned-only** latents (decoder-norm ratio ≥ {cc['thresholds']['specific']} and latent "
                f"scaling ν_error < {cc['thresholds']['nu_error']}, ν_recon < {cc['thresholds']['nu_recon']}) against "
                f"{cc['tuned_only_noise']} in the noise control → {cc['tuned_only_beyond_noise']} beyond noise; "
                f"{cc['base_only']} base-only ({cc['base_only_beyond_noise']} beyond noise). By the decoder-norm ratio alone "
                f"{cc['norm_ratio_only']} latents would look model-specific; "
                f"{c.get('tuned_norm_only', 0) + c.get('base_norm_only', 0)} of them fail latent scaling. "
                f"Classes: " + ", ".join(f"{k} {v}" for k, v in c.items()) + "."]
    return out


_SECTION_TEXT = {"weights": _weights_md, "activations": _activations_md, "emotions": _emotions_md, "features": _features_md,
                 "steering": _steering_md}


def write_report(run: Any, sections: dict[str, dict[str, Any]], *, plots: bool = True) -> dict[str, Any]:
    """Write ``summary.json`` and ``report.md`` (+ PNGs); return the summary."""
    summary = build_summary(run, sections)
    made, note = _plots(run) if plots else ({}, "not drawn (plots=False)")
    summary["plots"] = {"files": made, "note": note}
    with run.step("compare_report", {"plots": plots}) as step:
        run.write_json(art.SUMMARY, summary, nan="null")
        atomic_write_text(run.file(art.REPORT), render_markdown(run, summary, made, note))
        step.output(art.SUMMARY)
        step.output(art.REPORT)
    return summary
