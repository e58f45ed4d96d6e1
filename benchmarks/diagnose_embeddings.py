"""Which embedding carries the alignment: test ranks (standard protocol) of every modality embedding and of the
joint embeddings of a trained MPSEA or MCLEA checkpoint. A diagnostic for investigations (issue 29: MPSEA's
shortfall on FB15K-DB15K); it reads test links, so it is never part of model selection.

    python benchmarks/diagnose_embeddings.py --ckpt runs/x/checkpoints/best-epoch189.ckpt --json out.json -- \\
        experiment=mpsea dataset=fbdb15k seed_ratio=0.2 data_dir=../shared/data

The overrides rebuild the run's data and module (the same split as the run that wrote the checkpoint: same
``seed_ratio``/``split_seed``); only the checkpoint's ``state_dict`` is read, with ``weights_only=True``.
MPSEA rows: every modality before (``early``) and after (``late``) fusion, the early joint ``x^mu`` and the late
joint ``x~^mu`` (weighted concatenations, Eq. 8-9), and both with equal weights. MCLEA rows: every modality and the
joint embedding.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch
import torch.nn.functional as F
from hydra.utils import instantiate

from mmea_lightning.api import compose_config
from mmea_lightning.eval.evaluator import evaluate_alignment
from mmea_lightning.models.aligners.mclea import MCLEA
from mmea_lightning.models.aligners.mpsea import MPSEA
from mmea_lightning.models.fusion_layers.cross_modal_weights import weighted_concat


def embeddings_of(aligner, chunk: int = 4096) -> dict[str, torch.Tensor]:
    if isinstance(aligner, MCLEA):
        per_modality, joint = aligner.embeddings()
        return {**{f"modality {m}": e for m, e in per_modality.items()}, "joint": joint}
    if not isinstance(aligner, MPSEA):
        raise SystemExit(f"diagnose_embeddings: MPSEA or MCLEA checkpoints only, got {type(aligner).__name__}")
    tokens = aligner.encode()
    lates, weights = [], []
    for start in range(0, aligner.present.shape[0], chunk):
        rows = slice(start, start + chunk)
        late, w = aligner.fuse({m: t[rows] for m, t in tokens.items()}, aligner.present[rows])
        lates.append(late)
        weights.append(w)
    late, w = torch.cat(lates, 1), torch.cat(weights)
    out = {f"early {m}": tokens[m] for m in aligner.modalities}
    out.update({f"late {m}": late[i] for i, m in enumerate(aligner.modalities)})
    out["early joint x^mu (weighted)"] = weighted_concat(torch.stack([tokens[m] for m in aligner.modalities], 1), w)
    out["late joint x~^mu (weighted)"] = weighted_concat(late.transpose(0, 1), w)
    out["early joint, equal weights"] = torch.cat([F.normalize(tokens[m], dim=1) for m in aligner.modalities], 1)
    out["late joint, equal weights"] = torch.cat([F.normalize(late[i], dim=1) for i in range(len(late))], 1)
    return out


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", help="write the rows here too")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = compose_config([*args.overrides, f"threads={args.threads}"])
    datamodule = instantiate(cfg.data, _convert_="object")
    datamodule.setup("fit")
    module = instantiate(cfg.model.module, _partial_=True)(features=datamodule.features)
    module.load_state_dict(torch.load(args.ckpt, map_location="cpu", weights_only=True)["state_dict"], strict=True)
    module.eval()
    links = torch.as_tensor(datamodule.split.test, dtype=torch.long)
    rows, start = [], time.perf_counter()
    with torch.no_grad():
        for name, emb in embeddings_of(module.aligner).items():
            m = evaluate_alignment(F.normalize(emb.float(), dim=1), links, module.kg1_ids, module.kg2_ids,
                                   protocols=("standard",))
            rows.append({"embedding": name, "hits@1": m["test/hits@1"], "hits@10": m["test/hits@10"],
                         "mrr": m["test/mrr"]})
            print(f"{name:32s} H@1 {m['test/hits@1']:.4f}  H@10 {m['test/hits@10']:.4f}  MRR {m['test/mrr']:.4f}")
    print(f"{time.perf_counter() - start:.1f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"checkpoint": args.ckpt, "overrides": args.overrides, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1:])
