"""The real pretrained SmolLM2-135M through the recipes: the anchor the recipes choose, a CPU fit that
starts from the pretrained loss, and an export that plain transformers reloads with the same logits."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from anchor_lightning.commands import main
from tests.conftest import SHARED_DATA, SMOLLM2_GGUF, needs_smollm2
from tests.helpers import checkpoint_fragment, fresh_process_logits, module_logits

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted(p for p in (ROOT / "recipes" / "smollm2-135m").glob("32k-*.yaml") if not p.stem.endswith("-mix"))
# a CPU run of the GPU recipe: 1K rows, the dense-mask backend, per-document layout as varlen packs it
CPU = [
    "--trainer.accelerator=cpu",
    "--trainer.precision=32-true",
    "--model.backend=sdpa",
    "--model.layout=per_doc",
    "--model.optimizer.init_args.fused=false",
    "--data.num_workers=0",
    "--seq_len=1024",
    "--data.micro_batch_size=1",
    "--data.global_batch_size=1",
]


def documents(tmp_path: Path) -> Path:
    """WikiText articles (real English text the model has never been trained on by us) as text JSONL."""
    lines = (SHARED_DATA / "wikitext2-valid.jsonl").read_text().splitlines()[:12]
    path = tmp_path / "docs.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_the_four_recipes_differ_only_in_mode_and_names():
    texts = {p.stem.removeprefix("32k-"): yaml.safe_load(p.read_text()) for p in RECIPES}
    assert set(texts) == {"anchor", "intra_doc", "intra_doc_reset", "full"}

    def without_names(recipe: dict) -> dict:
        recipe = json.loads(json.dumps(recipe))
        del recipe["model"]["mode"], recipe["trainer"]["logger"]["init_args"]["name"]
        del recipe["trainer"]["callbacks"][0]["init_args"]["dirpath"]
        return recipe

    for mode, recipe in texts.items():
        assert recipe["model"]["mode"] == mode
        assert recipe["trainer"]["logger"]["init_args"]["name"] == f"smollm2-135m-32k-{mode}"
        assert recipe["trainer"]["callbacks"][0]["init_args"]["dirpath"] == f"checkpoints/smollm2-135m-32k-{mode}"
        assert without_names(recipe) == without_names(texts["anchor"])
    anchor = texts["anchor"]
    assert anchor["seq_len"] == 32768 and anchor["model"]["rope_theta"] == pytest.approx(100000 * 500**0.5, rel=1e-6)
    assert (anchor["data"]["anchor_id"], anchor["data"]["eos_id"], anchor["data"]["seed"]) == (0, 0, 0)
    steps, rows = anchor["trainer"]["max_steps"], anchor["data"]["global_batch_size"]
    assert steps * rows * anchor["seq_len"] == 100 * 4 * 32768
    assert anchor["trainer"]["precision"] == "bf16-mixed"


@pytest.mark.slow  # the real GGUF is converted (once per cache) before the recipe instantiates
@needs_smollm2
def test_the_recipe_anchors_documents_on_endoftext_and_strips_both_openers(tmp_path):
    cli = main(
        [
            "--config",
            str(RECIPES[0]),
            f"--model.pretrained={SMOLLM2_GGUF}",
            *CPU,
            f"--data.train={documents(tmp_path)}",
            "--data.val=null",
            f"--data.cache_dir={tmp_path / 'rows'}",
        ],
        run=False,
    )
    data = cli.datamodule
    assert data.tokenizer.tok.convert_ids_to_tokens([data.anchor_id]) == ["<|endoftext|>"]
    assert data.packing_spec().strip_ids == (0, 1)  # F itself and the tokenizer's BOS <|im_start|>
    data.setup("fit")
    row = data.train_rows.row(0)
    firsts = row.input_ids[row.is_first]
    assert (firsts == 0).all() and len(firsts) >= 1
    ends = [row.input_ids[np.flatnonzero(row.doc_ids == d)[-1]] for d in np.unique(row.doc_ids[row.doc_ids >= 0])[:-1]]
    assert all(token == 0 for token in ends)  # each complete document ends with <|endoftext|> (data.eos_id)


@needs_smollm2
def test_pretokenized_documents_opening_with_a_foreign_special_token_are_refused(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps({"input_ids": [2, 504, 3575, 282, 4649] * 20}) + "\n" for _ in range(4)))
    with pytest.raises(SystemExit):
        main(
            [
                "fit",
                "--config",
                str(RECIPES[0]),
                f"--model.pretrained={SMOLLM2_GGUF}",
                *CPU,
                f"--data.train={path}",
                "--data.val=null",
                "--data.val_fraction=0",
                f"--data.cache_dir={tmp_path / 'rows'}",
                "--trainer.max_steps=1",
            ]
        )


@pytest.mark.slow
@needs_smollm2
def test_two_steps_start_from_the_pretrained_loss_and_the_export_reloads_with_the_same_logits(tmp_path, capsys):
    """The acceptance check: the first logged loss is the pretrained model's (WikiText perplexity ~13,
    ln 13 = 2.6 nats; random weights would give ln 49152 = 10.8), and the exported directory gives the
    trained module's logits in plain transformers."""
    from tests.test_cli import scalars

    fragment = checkpoint_fragment(tmp_path, tmp_path / "ckpt", logs=tmp_path / "runs")
    main(
        [
            "fit",
            "--config",
            str(RECIPES[0]),
            "--config",
            fragment,
            f"--model.pretrained={SMOLLM2_GGUF}",
            *CPU,
            f"--data.train={documents(tmp_path)}",
            "--data.val=null",
            "--data.val_fraction=0",
            f"--data.cache_dir={tmp_path / 'rows'}",
            "--trainer.max_steps=2",
            "--trainer.log_every_n_steps=1",
        ]
    )
    losses = [v for _, v in scalars(tmp_path / "runs")["train/loss"]]
    print(f"SmolLM2-135M, 1K rows of WikiText, anchor mode: train/loss {losses}")
    assert len(losses) == 2 and losses[0] < 4.0, losses

    main(["export", "--ckpt", str(tmp_path / "ckpt" / "last.ckpt"), "--out", str(tmp_path / "hf")])
    exported = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert exported["rope_parameters"]["rope_theta"] == pytest.approx(2236068.0)
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(tmp_path / "hf").convert_ids_to_tokens([0]) == ["<|endoftext|>"]

    # one document behind F: positions 0, 1, 2 ... in anchor mode, as plain causal inference numbers them
    ids = [0] + AutoTokenizer.from_pretrained(tmp_path / "hf")("The capital of France is Paris.")["input_ids"]
    expected = module_logits(str(tmp_path / "ckpt" / "last.ckpt"), ids, "per_doc", 0, (0, 1))
    logits, _ = fresh_process_logits(tmp_path / "hf", ids, tmp_path)
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)

    # RULER on the exported model at its real size (its 28M-element embedding once stopped every RULER
    # evaluation of it before the first sample: the tiny test models never reached that size)
    argv = ["evaluate", "--suite", "ruler", "--model", str(tmp_path / "hf"), "--lengths", "1024", "--samples", "1"]
    main([*argv, "--tasks", "niah_single_1", "--dtype", "float32", "--workers", "1", "--out", str(tmp_path / "ruler")])
    ruler = json.loads((tmp_path / "ruler" / "ruler.json").read_text())
    print(f"RULER niah_single_1 at 1K, one sample: {ruler['samples'][0]['prediction']!r}")
    assert len(ruler["samples"]) == 1 and ruler["samples"][0]["task"] == "niah_single_1"
