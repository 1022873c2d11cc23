"""lab/miniature/steps.py: the commands each step of the miniature runs, per setting (pure)."""

from __future__ import annotations

from pathlib import Path

from lab.miniature.steps import DRY_FIT, Plan


def plan(tmp_path: Path, setting: str, **extra) -> Plan:
    return Plan(setting, tmp_path / "work", tmp_path / "m.gguf", tmp_path / "long", tmp_path / "mix", **extra)


def test_the_long_document_setting_trains_each_mode_from_its_recipe_and_resumes(tmp_path):
    p = plan(tmp_path, "long-32k")
    argv = p.fit("full")
    assert argv[:3] == ["fit", "--config", str(p.recipe("full"))] and p.recipe("full").name == "32k-full.yaml"
    assert f"--data.train={tmp_path / 'long' / 'train.jsonl'}" in argv and "--ckpt_path=last" not in argv
    assert not any(a.startswith("--model.mode") for a in argv)  # the recipe names the mode
    p.checkpoint("full").parent.mkdir(parents=True)
    p.checkpoint("full").touch()
    assert p.fit("full")[-1] == "--ckpt_path=last"
    assert p.export("full") == ["export", "--ckpt_path", str(p.checkpoint("full")), "--out", str(p.exported("full"))]
    assert [name for name, _ in p.evaluations("full")] == ["eval-full", "diagnose-full"]  # the needles suite


def test_the_mix_settings_share_one_recipe_with_the_mode_as_an_override(tmp_path):
    p = plan(tmp_path, "mix-64k", seed=1)
    argv = p.fit("intra_doc_reset")
    assert p.recipe("intra_doc_reset").name == "64k-mix.yaml" and "--model.mode=intra_doc_reset" in argv
    assert f"--data.train={tmp_path / 'mix' / 'train.jsonl'}" in argv and "--data.seed=1" in argv
    assert p.run_name("anchor") == "smollm2-135m-mix/anchor-varlen-65536"
    assert p.ruler_lengths() == ["4096", "8192", "16384", "32768", "65536"]
    (name, ruler), = p.evaluations("anchor")  # fmt: skip
    assert name == "ruler-anchor" and ruler[ruler.index("--samples") + 1] == "100"
    assert ruler[ruler.index("--lengths") + 1 :][:5] == p.ruler_lengths()


def test_base_theta_is_the_pretrained_model_with_the_recipes_rope_base(tmp_path):
    p = plan(tmp_path, "mix-32k", suites_asked=("ruler", "needles"))
    (_, ruler), (_, needles), (_, diagnose) = p.evaluations("base-theta")
    for argv in (ruler, needles, diagnose):
        assert argv[argv.index("--model") + 1] == str(tmp_path / "m.gguf")
        assert argv[argv.index("--rope_theta") + 1] == "2236068.0"
    assert "--rope_theta" not in p.evaluations("base")[0][1]


def test_a_dry_run_trains_at_toy_size(tmp_path):
    p = plan(tmp_path, "mix-32k", dry_run=True)
    argv = p.fit("anchor")
    assert all(a in argv for a in DRY_FIT)
    assert f"--data.train={tmp_path / 'mix' / 'val.jsonl'}" in argv
    assert p.run_name("anchor") == "smollm2-135m-mix/anchor-sdpa-1024"


def test_runs_on_one_machine_share_the_rows_and_the_ruler_samples(tmp_path):
    alone, shared = plan(tmp_path, "mix-32k"), plan(tmp_path, "mix-32k", cache=tmp_path / "shared")
    assert f"--data.cache_dir={tmp_path / 'work' / 'rows'}" in alone.fit("anchor")
    assert f"--data.cache_dir={tmp_path / 'shared' / 'rows'}" in shared.fit("full")
    assert shared.cache_root == tmp_path / "shared" and alone.cache_root == tmp_path / "work"


def test_every_model_of_a_setting_is_scored_with_one_prefill_kernel(tmp_path):
    """long-32k keeps FlashAttention-2, which scored its first models; the mixes take auto (cuDNN where
    it agrees); the dry run's CPU gives none."""
    kernel = lambda argv: argv[argv.index("--prefill_kernel") + 1]  # noqa: E731
    long = plan(tmp_path, "long-32k", suites_asked=("ruler",))
    assert {kernel(long.evaluations(m)[0][1]) for m in ("anchor", "full", "base-theta")} == {"flash"}
    assert kernel(plan(tmp_path, "mix-64k").evaluations("full")[0][1]) == "auto"
    assert "--prefill_kernel" not in plan(tmp_path, "mix-32k", dry_run=True).evaluations("anchor")[0][1]


def test_the_64k_miniature_trains_without_the_in_training_ruler_to_fit_one_session(tmp_path):
    argv = plan(tmp_path, "mix-64k").fit("full")
    assert argv[-2:] == ["--trainer.callbacks.every_n_steps=0", "--trainer.callbacks.at_end=false"]
    assert not any("every_n_steps" in a for a in plan(tmp_path, "mix-32k").fit("full"))  # 32K keeps it
    assert "--trainer.callbacks.every_n_steps=1" in plan(tmp_path, "mix-64k", dry_run=True).fit("anchor")


def test_a_second_row_order_keeps_its_results_apart_by_name(tmp_path):
    first, second = plan(tmp_path, "mix-32k"), plan(tmp_path, "mix-32k", seed=1)
    assert first.results("anchor") == tmp_path / "work" / "results" / "anchor"
    assert second.results("anchor") == tmp_path / "work" / "results" / "anchor-seed1"
    assert second.results("base") == tmp_path / "work" / "results" / "base"  # untrained: no row order
    (_, ruler), = second.evaluations("full")  # fmt: skip
    assert ruler[ruler.index("--out") + 1] == str(tmp_path / "work" / "results" / "full-seed1" / "ruler")


def test_a_variant_appends_its_overrides_to_every_fit_and_names_its_results(tmp_path):
    fp8 = plan(tmp_path, "long-32k", variant="fp8", fit_args=("--model.float8=tensorwise", "--model.float8_layers=all"))
    assert fp8.fit("anchor")[-2:] == ["--model.float8=tensorwise", "--model.float8_layers=all"]
    assert fp8.results("anchor") == tmp_path / "work" / "results" / "anchor-fp8"
    assert plan(tmp_path, "mix-32k", seed=1, variant="fp8").results("full").name == "full-seed1-fp8"
    assert fp8.results("base").name == "base"  # the pretrained model is no variant
    assert "--model.float8=tensorwise" not in plan(tmp_path, "long-32k").fit("anchor")
