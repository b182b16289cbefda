"""The model the pipeline trained: validation, patch and slide AUC, the CAMELYON16 FROC with its sensitivities,
the CAMELYON17 pN-stage kappa, ROC curves, a few heatmaps."""
from __future__ import annotations

import base64
import io
from pathlib import Path

from . import plots
from .context import Context
from .html import esc, figure, head, missing, swatch, table

AUCS = (("train_val_auc", "validation AUC", "patches, last epoch"), ("infer_patch_auc", "patch AUC", "test slides"),
        ("infer_slide_auc", "slide AUC", "top-k score"), ("infer_froc", "FROC", "lesions, CAMELYON16"),
        ("infer_pn_kappa", "pN kappa", "patients, CAMELYON17"))
FP_RATES = ("0.25", "0.5", "1", "2", "4", "8")


def _auc(v) -> str:
    return '<span class="na">–</span>' if missing(v) else f"{v:.3f}"


def render(ctx: Context) -> str | None:
    cols = [a for a in AUCS if a[0] in ctx.df and ctx.df[a[0]].notna().any()]
    cfgs = [c for c in ctx.pipeline if any(ctx.stat(c, a[0]) for a in cols)]
    if not cfgs:
        return None
    rows = [[swatch(c)] + [_auc(st.mean if (st := ctx.stat(c, a[0])) else None) for a in cols]
            + [str(max(st.n for a in cols if (st := ctx.stat(c, a[0]))))] for c in cfgs]
    out = table([head("configuration")] + [head(t, u) for _, t, u in cols] + [head("runs")], rows,
                caption="Area under the ROC curve; FROC: mean lesion sensitivity at 1/4 to 8 false positives per "
                        "slide, as CAMELYON16's Evaluation_FROC.py; pN kappa: quadratic weighted kappa of the "
                        "patients' pN stages, as CAMELYON17 scores. Mean of the runs (1.0 = perfect)")
    sens = [f"infer_froc_sensitivity_{r}" for r in FP_RATES]
    froc_cfgs = [c for c in cfgs if any(ctx.stat(c, k) for k in sens)]
    if froc_cfgs:
        out += table([head("configuration")] + [head(r, "FP per slide") for r in FP_RATES],
                     [[swatch(c)] + [_auc(st.mean if (st := ctx.stat(c, k)) else None) for k in sens]
                      for c in froc_cfgs],
                     caption="FROC sensitivities: the share of lesions found at each average number of false "
                             "positives per slide, mean of the runs")
    rocs = [(c, s) for c in cfgs for s in c.runs if (s.get("infer") or {}).get("roc")]
    if rocs:
        plt = plots.pyplot()
        fig, ax = plt.subplots(figsize=(3.6, 3.4))
        seen = set()
        for c, s in rocs:
            roc = s["infer"]["roc"]
            ax.plot(roc["fpr"], roc["tpr"], lw=1.2, color=c.colour, ls="--" if c.emulated else "-",
                    label=None if c.key in seen else plots.wrap(c.label, 30))
            seen.add(c.key)
        ax.plot([0, 1], [0, 1], color="#999", lw=0.8, ls=":")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_aspect("equal")
        ax.set_xlabel("false positive rate (fraction of normal patches)")
        ax.set_ylabel("true positive rate (fraction of tumour patches)")
        ax.legend(loc="lower right", frameon=False, fontsize=6.5)
        out += figure(plots.svg(fig, "patch-level ROC curves"),
                      "Patch-level ROC of inference on the test slides, one curve per run in its configuration's "
                      "colour; dotted: chance.")
    return out


def heatmaps(ctx: Context) -> str | None:
    """Up to four heatmap overlays from the latest compared run that wrote them."""
    from PIL import Image

    for c in reversed(list(ctx.configs.values())):
        for s in reversed(c.runs):
            figs = []
            for p in (s.get("infer") or {}).get("heatmaps", [])[:4]:
                if not Path(p).is_file():
                    continue
                im = Image.open(p)
                im.thumbnail((320, 320))
                buf = io.BytesIO()
                im.save(buf, "PNG")
                figs.append(f'<figure class="keep heat"><img alt="heatmap {esc(Path(p).stem)}" '
                            f'src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'
                            f"<figcaption>{esc(Path(p).stem)}</figcaption></figure>")
            if figs:
                return (f'<p class="lead">Tumour probability over the test slides, from run {esc(s["run_id"])} '
                        f"({swatch(c)}).</p>" + f'<div class="heats">{"".join(figs)}</div>')
    return None
