"""s2s compare: variants x seeds as ordinary run folders, resumable, and an honest report."""

import json
import math
import statistics

import pytest
import yaml
from conftest import SENTENCES, tiny_config_dict, write_corpus

from s2s.cli import main
from s2s.errors import ConfigError, Interrupted, S2SError
from s2s.experiments import compare as cmp
from s2s.translation.scores import score


def write_sweep(tmp_path, corpus, test_pairs, sweep: dict, name: str, valid_every=3):
    """A base config on the tiny corpus (test set ``test_pairs``) and a sweep over it."""
    write_corpus(corpus["dir"], "test", test_pairs)
    base = tiny_config_dict(corpus, max_steps=3, valid_every=valid_every, threads=1)
    base["data"]["test"] = str(corpus["dir"] / "test")
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    common = {"base": "base.yaml", "seeds": [1, 2], "set": {"train.lr": 0.01}, "samples": 200}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(common | sweep, sort_keys=False))
    return path


@pytest.fixture
def sweep_file(tmp_path, tiny_corpus):
    variants = {"plain": {}, "wide": {"model.decoder.hidden_size": 48}}
    return write_sweep(tmp_path, tiny_corpus, SENTENCES[2:7], {"variants": variants}, "sweep")


@pytest.fixture
def learned_sweep(tmp_path, tiny_corpus):
    """Runs that learn (test = training sentences): short ones score a few BLEU, long
    ones tens, and seeds differ, so means, deviations and paired tests are real."""
    variants = {"short": {"train.max_steps": 12}, "long": {"train.max_steps": 30}}
    sweep = {"baseline": "short", "variants": variants, "beam": 2}
    return write_sweep(tmp_path, tiny_corpus, SENTENCES, sweep, "learned", valid_every=100)


def test_compare_trains_every_run_and_reports_mean_std_and_tests(
    tmp_path, learned_sweep, monkeypatch
):
    from s2s.decoding.translate import translate_lines
    from s2s.translation import checkpoint

    beams = []
    monkeypatch.setattr(
        cmp,
        "translate_lines",
        lambda *a, **kw: beams.append(kw["beam"]) or translate_lines(*a, **kw),
    )
    out = tmp_path / "out"
    report = cmp.compare(cmp.read_sweep(learned_sweep), out)
    assert beams == [2, 2, 2, 2]  # every run's test set decoded with the sweep's beam
    refs = [t for _, t in SENTENCES]
    results, hyps = {}, {}
    for variant in ("short", "long"):
        for seed in (1, 2):
            folder = out / variant / f"seed-{seed}"
            result = json.loads((folder / "result.json").read_text())
            assert (folder / "best.pt").is_file() and (folder / "metrics.jsonl").is_file()
            hyps[(variant, seed)] = (folder / "test.hyp").read_text().split("\n")[:-1]
            assert result["bleu"] == pytest.approx(score(hyps[(variant, seed)], refs).bleu)
            assert yaml.safe_load((folder / "config.yaml").read_text())["train"]["seed"] == seed
            records = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]
            valid = [r for r in records if r["kind"] == "valid"]
            assert result["valid_bleu"] == max(r["bleu"] for r in valid)
            assert result["steps"] == valid[-1]["step"] and result["train_seconds"] > 0
            # the sweep's beam decoded the test set
            loaded = checkpoint.load_for_translation(folder / "best.pt")
            sources = [s for s, _ in SENTENCES]
            again = translate_lines(
                loaded.model, loaded.src_tok, loaded.tgt_tok, sources, reverse_source=False, beam=2
            )
            assert result["beam"] == 2 and hyps[(variant, seed)] == again
            results[(variant, seed)] = result
    rows = {row["variant"]: row for row in report["variants"]}
    for variant, row in rows.items():
        bleu = [results[(variant, s)]["bleu"] for s in (1, 2)]
        assert row["bleu"] == bleu and row["bleu_max"] == max(bleu)
        assert row["bleu_mean"] == pytest.approx(statistics.fmean(bleu))
        assert row["bleu_std"] == pytest.approx(statistics.stdev(bleu))
        assert row["bleu_std"] > 0  # the seeds differ
    assert rows["long"]["bleu_mean"] > rows["short"]["bleu_mean"] + 10
    assert rows["short"]["p_values"] == [] and report["baseline"] == "short"
    # each seed's run is tested against the baseline run of the same seed
    expected = [
        cmp.paired_p_value(hyps[("short", s)], hyps[("long", s)], refs, "ar", 200) for s in (1, 2)
    ]
    assert rows["long"]["p_values"] == expected
    assert all(0.0 < p < 0.1 for p in expected)  # 30 BLEU apart on 8 sentences
    assert hyps[("short", 1)] != hyps[("short", 2)]
    assert rows["long"]["delta"] == pytest.approx(
        rows["long"]["bleu_mean"] - rows["short"]["bleu_mean"]
    )
    page = (out / "report.md").read_text()
    assert "| long |" in page and "baseline" in page and "nrefs:1" in page
    assert (out / "compare.png").stat().st_size > 1000
    assert json.loads((out / "report.json").read_text()) == json.loads(json.dumps(report))


def test_rerunning_skips_finished_runs(tmp_path, sweep_file):
    out = tmp_path / "out"
    sweep = cmp.read_sweep(sweep_file)
    first = cmp.compare(sweep, out)
    (out / "wide" / "seed-2" / "result.json").unlink()
    trained = []
    second = cmp.compare(
        sweep, out, train_run=lambda cfg, folder: trained.append(folder.relative_to(out))
    )
    assert [str(f) for f in trained] == ["wide/seed-2"]  # only the unfinished one
    assert second["variants"] == first["variants"]


def test_a_changed_test_set_is_decoded_again_not_retrained(tmp_path, sweep_file, tiny_corpus):
    out = tmp_path / "out"
    sweep = cmp.read_sweep(sweep_file)
    cmp.compare(sweep, out)
    write_corpus(tiny_corpus["dir"], "test", SENTENCES[2:4])  # 5 pairs cut to 2, in place
    trained = []
    cmp.compare(sweep, out, train_run=lambda cfg, folder: trained.append(folder))
    assert trained == []
    for hyp in out.glob("*/seed-*/test.hyp"):
        assert len(hyp.read_text(encoding="utf-8").splitlines()) == 2, hyp


def test_a_changed_base_config_stops_the_sweep_unless_forced(tmp_path, sweep_file, capsys):
    out = tmp_path / "out"
    cmp.compare(cmp.read_sweep(sweep_file), out)
    old_result = (out / "plain" / "seed-1" / "result.json").read_bytes()
    base = yaml.safe_load((tmp_path / "base.yaml").read_text())
    base["model"]["embedding_size"] = 8
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    argv = ["compare", str(sweep_file), "--out", str(out)]
    assert main(argv) == 2
    assert "different config (differs in model.embedding_size" in capsys.readouterr().err
    assert main([*argv, "--force"]) == 0
    (kept,) = (out / "plain" / "seed-1").glob("replaced-*")
    assert (kept / "result.json").read_bytes() == old_result  # the old score, set aside
    now = cmp.variant_config(cmp.read_sweep(sweep_file), "plain", 1)
    assert cmp.trained(out / "plain" / "seed-1", now)  # trained again, on the new base


def test_a_bad_variant_fails_before_anything_trains(tmp_path, sweep_file):
    data = yaml.safe_load(sweep_file.read_text())
    data["variants"]["typo"] = {"model.decoder.hiden_size": 48}
    sweep_file.write_text(yaml.safe_dump(data))
    out = tmp_path / "out"
    with pytest.raises(ConfigError, match=r"sweep variant 'typo': .*hiden_size.*hidden_size"):
        cmp.compare(cmp.read_sweep(sweep_file), out)
    assert not out.exists()


def test_dry_run_lists_runs_and_trains_nothing(tmp_path, sweep_file, capsys):
    out = tmp_path / "out"
    assert main(["compare", str(sweep_file), "--out", str(out), "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4 and "wide/seed-2" in lines[3]
    assert "model.decoder.hidden_size=48" in lines[3] and "train.lr=0.01" in lines[3]
    assert not out.exists()


def test_grid_names_every_combination():
    variants = cmp.grid_variants(
        {"model.encoder.cell": ["lstm", "gru"], "model.decoder.cell": ["lstm"], "train.lr": [0.001]}
    )
    assert list(variants) == [
        "model.encoder.cell=lstm,model.decoder.cell=lstm,lr=0.001",
        "model.encoder.cell=gru,model.decoder.cell=lstm,lr=0.001",
    ]
    assert variants["model.encoder.cell=gru,model.decoder.cell=lstm,lr=0.001"] == {
        "model.encoder.cell": "gru",
        "model.decoder.cell": "lstm",
        "train.lr": 0.001,
    }


def test_grid_values_that_print_alike_keep_apart_and_repeats_are_refused():
    variants = cmp.grid_variants({"train.lr": [0.1234561, 0.1234564], "model.dropout": [0.1]})
    assert list(variants) == ["lr=0.1234561,dropout=0.1", "lr=0.1234564,dropout=0.1"]
    assert [v["train.lr"] for v in variants.values()] == [0.1234561, 0.1234564]
    with pytest.raises(ConfigError, match="sweep grid key 'train.lr' lists a value twice"):
        cmp.grid_variants({"train.lr": [0.01, 0.01]})
    with pytest.raises(ConfigError, match="sweep grid key 'train.lr' lists a value twice"):
        cmp.grid_variants({"train.lr": [0.001, "1e-3"]})  # YAML 1.1 reads 1e-3 as text


def test_a_variant_given_twice_in_a_sweep_file_is_refused(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("base: b.yaml\nvariants:\n  a: {}\n  a: {train.lr: 0.01}\n")
    with pytest.raises(ConfigError, match=r"key 'a' appears twice.*lines 3 and 4"):
        cmp.read_sweep(path)


def test_variant_names_that_make_one_folder_are_refused(tmp_path, sweep_file):
    data = yaml.safe_load(sweep_file.read_text())
    data["variants"] = {"a b": {}, "a_b": {"model.decoder.hidden_size": 48}}
    sweep_file.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="'a b' and 'a_b' both make the folder 'a_b'"):
        cmp.read_sweep(sweep_file)


def test_random_search_draws_in_range_and_is_seeded():
    spec = {
        "trials": 20,
        "seed": 7,
        "space": {
            "train.lr": {"log_uniform": [1e-4, 1e-2]},
            "model.dropout": {"uniform": [0.1, 0.5]},
            "model.encoder.layers": {"int": [1, 3]},
            "model.encoder.cell": {"choice": ["lstm", "gru"]},
        },
    }
    a, b = cmp.random_variants(spec), cmp.random_variants(spec)
    assert a == b and len(a) == 20 and "trial-1" in a and "trial-20" in a
    # more trials later keep the earlier ones: same names, same draws
    assert cmp.random_variants(spec | {"trials": 9}) == {k: a[k] for k in list(a)[:9]}
    lrs = [v["train.lr"] for v in a.values()]
    assert all(1e-4 <= x <= 1e-2 for x in lrs)
    # log-uniform: about half the draws below the geometric mean 1e-3
    assert 4 <= sum(x < 1e-3 for x in lrs) <= 16
    assert all(0.1 <= v["model.dropout"] <= 0.5 for v in a.values())
    assert {v["model.encoder.layers"] for v in a.values()} <= {1, 2, 3}
    assert cmp.random_variants(spec | {"seed": 8}) != a
    with pytest.raises(ConfigError, match="train.lr"):
        cmp.random_variants({"trials": 2, "space": {"train.lr": {"log_uniform": [0, 1]}}})


def test_paired_test_separates_a_better_system_from_chance():
    refs = [f"the {w} sat on the mat number {i} today ." for i, w in enumerate("abcdefghij" * 4)]
    good = list(refs)
    bad = [" ".join(r.split()[:3]) for r in refs]
    assert cmp.paired_p_value(bad, good, refs, "ar", 500) < 0.01
    assert cmp.paired_p_value(good, list(good), refs, "ar", 500) == 1.0
    assert cmp.paired_p_value(bad, good, refs, "bs", 200) < 0.05
    assert not math.isnan(cmp.paired_p_value(bad, bad[:-1] + [good[-1]], refs, "ar", 200))


def test_sweep_file_errors_name_the_problem(tmp_path):
    path = tmp_path / "s.yaml"
    for data, message in (
        ({"base": "b.yaml"}, "exactly one of variants, grid, random"),
        ({"base": "b.yaml", "variants": {"a": {}}, "grid": {}}, "exactly one of"),
        ({"base": "b.yaml", "variants": {"a": {}}, "seeds": [1, 1]}, "seeds repeat"),
        ({"base": "b.yaml", "variants": {"a": {}}, "baseline": "z"}, "baseline 'z'"),
        ({"base": "b.yaml", "variants": {"a": {}}, "split": "train"}, "split must be"),
        ({"base": "b.yaml", "variants": {"a": {}}, "seed": [1]}, "unknown key 'seed'"),
        ({"variants": {"a": {}}}, "needs base"),
        ({"base": "b.yaml", "variants": {"a": {}}, "seeds": [2**63]}, "integers from 0 to"),
        ({"base": "b.yaml", "variants": {"a": {}}, "seeds": [-1]}, "integers from 0 to"),
        ({"base": "b.yaml", "variants": {"a": {}}, "seeds": [True]}, "integers from 0 to"),
        ({"base": "b.yaml", "grid": {}}, "grid needs at least one key"),
        ({"base": "b.yaml", "random": {"trials": True, "space": {"x": 1}}}, "trials"),
    ):
        path.write_text(yaml.safe_dump(data))
        with pytest.raises(ConfigError, match=message):
            cmp.read_sweep(path)


def test_an_edited_sweep_does_not_reuse_old_results(tmp_path, sweep_file):
    out = tmp_path / "out"
    cmp.compare(cmp.read_sweep(sweep_file), out)
    data = yaml.safe_load(sweep_file.read_text())
    data["set"]["train.lr"] = 0.02
    sweep_file.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"belongs to a different config \(differs in train\.lr"):
        cmp.compare(cmp.read_sweep(sweep_file), out)
    assert len(list(out.glob("*/seed-*/result.json"))) == 4  # nothing written is lost


def test_a_failed_run_does_not_stop_the_others_and_is_named(tmp_path, sweep_file):
    from s2s.translation import train

    out, tried = tmp_path / "out", []

    def diverges_once(cfg, folder):
        tried.append(folder.relative_to(out).as_posix())
        if folder.parent.name == "wide" and cfg.train.seed == 1:
            raise S2SError("training stopped at step 2: 5 steps in a row with NaN/Inf")
        return train(cfg, folder)

    sweep = cmp.read_sweep(sweep_file)
    with pytest.raises(S2SError, match=r"1 of 4 runs failed.*wide seed 1: training stopped"):
        cmp.compare(sweep, out, train_run=diverges_once)
    assert tried == ["plain/seed-1", "plain/seed-2", "wide/seed-1", "wide/seed-2"]
    assert len(list(out.glob("*/seed-*/result.json"))) == 3
    tried.clear()
    report = cmp.compare(sweep, out, train_run=lambda c, f: tried.append(f) or train(c, f))
    assert [f.relative_to(out).as_posix() for f in tried] == ["wide/seed-1"]
    assert [r["runs"] for r in report["variants"]] == [2, 2]


def test_an_interrupt_stops_the_sweep_at_once(tmp_path, sweep_file):
    tried = []

    def interrupted(cfg, folder):
        tried.append(folder)
        raise Interrupted("interrupted at step 1; rerun the same command to resume")

    with pytest.raises(Interrupted):
        cmp.compare(cmp.read_sweep(sweep_file), tmp_path / "out", train_run=interrupted)
    assert len(tried) == 1


def test_evaluation_data_is_checked_before_anything_trains(tmp_path, sweep_file):
    data = yaml.safe_load(sweep_file.read_text())
    trained = []
    for variants, message in (
        ({"plain": {}, "gone": {"data.test": str(tmp_path / "nope")}}, "variant 'gone': its test"),
        ({"plain": {}, "fewer": {"data.valid_limit": 2}}, None),  # test unchanged: fine
    ):
        data["variants"] = variants
        sweep_file.write_text(yaml.safe_dump(data))
        if message:
            with pytest.raises(ConfigError, match=message):
                cmp.compare(cmp.read_sweep(sweep_file), tmp_path / "out", train_run=trained.append)
        else:
            cmp.check_evaluation_data(
                cmp.read_sweep(sweep_file), cmp.plan(cmp.read_sweep(sweep_file), tmp_path)
            )
    assert trained == []
    data |= {"split": "valid", "variants": {"all": {}, "fewer": {"data.valid_limit": 2}}}
    sweep_file.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="'all' and 'fewer' are scored on different valid data"):
        cmp.compare(cmp.read_sweep(sweep_file), tmp_path / "out", train_run=trained.append)
    assert trained == []


def test_results_and_metrics_edited_or_cut_are_read_again(tmp_path, sweep_file):
    out = tmp_path / "out"
    first = cmp.compare(cmp.read_sweep(sweep_file), out)
    folder = out / "plain" / "seed-1"
    with open(folder / "metrics.jsonl", "a") as handle:
        handle.write('{"kind": "valid", "st')  # cut by a kill
    for text in ("[]", "null", json.dumps({"split": "test", "beam": 1})):
        (folder / "result.json").write_text(text)
        again = cmp.compare(cmp.read_sweep(sweep_file), out, train_run=lambda c, f: None)
        assert again["variants"] == first["variants"]  # decoded again, the same scores
        assert json.loads((folder / "result.json").read_text())["bleu"] == pytest.approx(
            first["variants"][0]["bleu"][0]
        )


def test_one_seed_has_no_standard_deviation(tmp_path, sweep_file):
    data = yaml.safe_load(sweep_file.read_text())
    sweep_file.write_text(yaml.safe_dump(data | {"seeds": [1]}))
    report = cmp.compare(cmp.read_sweep(sweep_file), tmp_path / "out")
    assert [r["bleu_std"] for r in report["variants"]] == [None, None]
    page = (tmp_path / "out" / "report.md").read_text()
    assert "± n/a" in page and "one seed says nothing of the spread" in page


def test_raising_a_limit_resumes_the_runs_and_then_skips_them(tmp_path, sweep_file):
    out = tmp_path / "out"
    cmp.compare(cmp.read_sweep(sweep_file), out)
    data = yaml.safe_load(sweep_file.read_text())
    data["set"]["train.max_steps"] = 4  # a limit key: the runs resume, not restart
    sweep_file.write_text(yaml.safe_dump(data))
    report = cmp.compare(cmp.read_sweep(sweep_file), out)
    results = [json.loads(p.read_text()) for p in sorted(out.glob("*/seed-*/result.json"))]
    assert [r["steps"] for r in results] == [4, 4, 4, 4]
    trained = []
    again = cmp.compare(cmp.read_sweep(sweep_file), out, train_run=lambda c, f: trained.append(f))
    assert trained == [] and again["variants"] == report["variants"]


# --------------------------------------------------------------------------- issue 15


def _png_size(path):
    from PIL import Image

    with Image.open(path) as image:
        return image.size


def test_tiny_sweep_writes_its_table_and_plots_and_a_rerun_skips_it(tmp_path, sweep_file):
    """The acceptance test of the report: 2 variants x 2 seeds from the CLI."""
    out = tmp_path / "out"
    assert main(["compare", str(sweep_file), "--out", str(out)]) == 0
    page = (out / "report.md").read_text()
    table = [line for line in page.splitlines() if line.startswith("| ")]
    assert table[0].startswith("| variant | BLEU mean ± std (max) |") and "pooled p" in table[0]
    report = json.loads((out / "report.json").read_text())
    rows = {row["variant"]: row for row in report["variants"]}
    assert table[2].startswith("| plain |") and "| baseline |" in table[2]
    wide = rows["wide"]
    assert table[3].startswith(
        f"| wide | {wide['bleu_mean']:.2f} ± {wide['bleu_std']:.2f} ({wide['bleu_max']:.2f}) |"
    )
    assert f"{wide['pooled_p']['ar']:.4f} / {wide['pooled_p']['bs']:.4f}" in table[3]
    assert "Bonferroni: 1 rows compared" in page and "0.05 / 1 = 0.0500" in page
    # validation curves: every run validated at steps 3 (valid_every 3, max_steps 3)
    for variant in ("plain", "wide"):
        for seed in ("1", "2"):
            assert [p[0] for p in report["curves"][variant][seed]] == [3]
    width, height = _png_size(out / "compare.png")
    assert width > 300 and height > 300
    assert _png_size(out / "curves.png") == (720, 456)  # 6 x 3.8 in at 120 dpi
    for png in ("compare.png", "curves.png"):
        (out / png).unlink()
    trained = []
    main_again = cmp.compare(
        cmp.read_sweep(sweep_file), out, train_run=lambda c, f: trained.append(f)
    )
    assert trained == [] and main_again["variants"] == report["variants"]
    assert (out / "compare.png").is_file() and (out / "curves.png").is_file()


def test_decode_axis_decodes_each_run_once_per_decoding_and_never_retrains(
    tmp_path, tiny_corpus, monkeypatch
):
    from s2s.decoding.translate import translate_lines

    calls = []

    def spy(*a, **kw):
        calls.append((kw["beam"], kw["alpha"]))
        return translate_lines(*a, **kw)

    monkeypatch.setattr(cmp, "translate_lines", spy)
    decode = {"greedy": {"beam": 1}, "beam3-lp1": {"beam": 3, "length_penalty": 1.0}}
    sweep = {"variants": {"base": {}}, "decode": decode}
    path = write_sweep(tmp_path, tiny_corpus, SENTENCES[2:7], sweep, "beam")
    out = tmp_path / "out"
    report = cmp.compare(cmp.read_sweep(path), out)
    assert calls == [(None, 0.0), (3, 1.0)] * 2  # per run: greedy, then beam 3 with lp 1
    assert [r["variant"] for r in report["variants"]] == ["greedy", "beam3-lp1"]
    assert report["baseline"] == "greedy" and report["beam"] is None
    for seed in (1, 2):
        folder = out / "base" / f"seed-{seed}"
        assert (folder / "test.greedy.hyp").is_file() and (folder / "test.beam3-lp1.hyp").is_file()
        result = json.loads((folder / "result.beam3-lp1.json").read_text())
        assert (result["beam"], result["length_penalty"]) == (3, 1.0)
    # a decoding added later: decoded, nothing trained, the others read back
    data = yaml.safe_load(path.read_text())
    data["decode"]["beam2"] = {"beam": 2}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    calls.clear()
    trained = []
    again = cmp.compare(cmp.read_sweep(path), out, train_run=lambda c, f: trained.append(f))
    assert trained == [] and calls == [(2, 0.0), (2, 0.0)]
    assert [r["variant"] for r in again["variants"]] == ["greedy", "beam3-lp1", "beam2"]
    assert again["variants"][:2] == [
        r | {"pooled_p": again["variants"][i]["pooled_p"]} for i, r in enumerate(report["variants"])
    ]


def test_reuse_links_a_finished_run_of_the_same_config_instead_of_training(tmp_path, tiny_corpus):
    first = write_sweep(tmp_path, tiny_corpus, SENTENCES[2:7], {"variants": {"a": {}}}, "one")
    cmp.compare(cmp.read_sweep(first), tmp_path / "one")
    variants = {"same": {}, "other": {"model.decoder.hidden_size": 48}}
    second = write_sweep(tmp_path, tiny_corpus, SENTENCES[2:7], {"variants": variants}, "two")
    trained = []

    def train_run(cfg, folder):
        trained.append(folder.relative_to(tmp_path))
        from s2s.translation import train

        train(cfg, folder)

    report = cmp.compare(
        cmp.read_sweep(second), tmp_path / "two", train_run=train_run, reuse=[tmp_path / "one"]
    )
    assert [str(f) for f in trained] == ["two/other/seed-1", "two/other/seed-2"]
    for seed in (1, 2):
        linked = tmp_path / "two" / "same" / f"seed-{seed}"
        assert linked.is_symlink()
        assert linked.resolve() == (tmp_path / "one" / "a" / f"seed-{seed}").resolve()
    one = json.loads((tmp_path / "one" / "report.json").read_text())
    assert report["variants"][0]["bleu"] == one["variants"][0]["bleu"]
    # a different config is never reused
    assert (
        cmp.find_trained(
            cmp.plan(cmp.read_sweep(second), tmp_path / "x")[2].cfg, [tmp_path / "one"]
        )
        is None
    )


def test_pooled_tests_use_every_seed_and_bonferroni_divides_alpha():
    from s2s.experiments.report import pooled_p_values, significant

    refs = [f"the {w} sat on the mat number {i} today ." for i, w in enumerate("abcdefghij" * 2)]
    bad = [" ".join(r.split()[:4]) for r in refs]
    half = refs[:10] + bad[10:]
    pooled = pooled_p_values([bad, bad], [half, refs], refs, 300)
    assert pooled == {
        t: cmp.paired_p_value(bad + bad, half + refs, refs + refs, t, 300) for t in ("ar", "bs")
    }
    row = {"variant": "x", "pooled_p": {"ar": 0.02, "bs": 0.01}}
    report = {"baseline": "b", "significance": "ar", "alpha": 0.05, "comparisons": 1}
    assert significant(row, report) is True
    assert significant(row, report | {"comparisons": 3}) is False  # 0.02 > 0.05 / 3
    assert significant(row, report | {"significance": "bs", "comparisons": 3}) is True
    assert significant({"variant": "b", "pooled_p": {}}, report) is None


def test_valid_curve_counts_a_resumed_step_once(tmp_path):
    records = [
        {"kind": "train", "step": 1, "loss": 3.0},
        {"kind": "valid", "step": 2, "bleu": 1.5},
        {"kind": "valid", "step": 4, "bleu": 2.0},
        {"kind": "valid", "step": 4, "bleu": 2.5},  # the run was cut and resumed
        {"kind": "valid", "step": 6, "bleu": 3.0},
    ]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert cmp.valid_curve(tmp_path) == [[2, 1.5], [4, 2.5], [6, 3.0]]
    assert cmp.valid_curve(tmp_path / "missing") == []


def test_decode_errors_name_the_problem(tmp_path):
    path = tmp_path / "s.yaml"
    base = {"base": "b.yaml", "variants": {"a": {}}}
    for extra, message in (
        ({"beam": 2, "decode": {"g": {"beam": 1}}}, "beam or decode, not both"),
        ({"decode": {}}, "at least one named decoding"),
        ({"decode": {"g": {"beam": 0}}}, "decode 'g': beam must be"),
        ({"decode": {"g": {"beam": 2, "lp": 1}}}, "unknown key 'lp'"),
        ({"decode": {"g": {"length_penalty": -1}}}, "length_penalty must be"),
        ({"decode": {"g": {}}, "baseline": "a"}, r"baseline 'a' is not one of its rows \(g\)"),
        ({"decode": {"g": {"beam": 1, "length_penalty": 1.0}}}, "changes nothing at beam 1"),
        ({"decode": {"b 1": {"beam": 2}, "b_1": {"beam": 3}}}, "two decodings named 'b_1'"),
    ):
        path.write_text(yaml.safe_dump(base | extra))
        with pytest.raises(ConfigError, match=message):
            cmp.read_sweep(path)


def test_each_seed_is_paired_with_the_baselines_same_seed(tmp_path, tiny_corpus):
    """Two variants with the same config train the same runs seed by seed: every paired
    test is then against identical output (p = 1), which pairing seed 1 with seed 2 would
    not give (the seeds' outputs differ)."""
    variants = {"a": {}, "twin": {}}
    path = write_sweep(tmp_path, tiny_corpus, SENTENCES, {"variants": variants}, "twins")
    out = tmp_path / "out"
    report = cmp.compare(cmp.read_sweep(path), out)
    hyp = {s: (out / "a" / f"seed-{s}" / "test.hyp").read_text() for s in (1, 2)}
    assert hyp[1] != hyp[2]
    twin = report["variants"][1]
    assert twin["p_values"] == [1.0, 1.0] and twin["pooled_p"] == {"ar": 1.0, "bs": 1.0}


def test_a_retraining_cut_short_never_leaves_old_results_to_read_back(tmp_path, sweep_file):
    from s2s import config as config_mod

    out = tmp_path / "out"
    cmp.compare(cmp.read_sweep(sweep_file), out)
    data = yaml.safe_load(sweep_file.read_text())
    data["set"]["train.max_steps"] = 4
    sweep_file.write_text(yaml.safe_dump(data, sort_keys=False))

    def cut(cfg, folder):  # what train() does first (the new limit into config.yaml), then a cut
        (folder / "config.yaml").write_text(config_mod.dump(cfg))
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cmp.compare(cmp.read_sweep(sweep_file), out, train_run=cut)
    cmp.compare(cmp.read_sweep(sweep_file), out)
    results = [json.loads(p.read_text()) for p in sorted(out.glob("*/seed-*/result.json"))]
    assert [r["steps"] for r in results] == [4, 4, 4, 4]


def test_reuse_skips_unfinished_runs_and_drops_a_dangling_link(tmp_path, tiny_corpus):
    import shutil

    first = write_sweep(tmp_path, tiny_corpus, SENTENCES[2:7], {"variants": {"a": {}}}, "one")
    cmp.compare(cmp.read_sweep(first), tmp_path / "one")
    (tmp_path / "one" / "a" / "seed-2" / "result.json").unlink()  # as if cut before its test
    second = write_sweep(tmp_path, tiny_corpus, SENTENCES[2:7], {"variants": {"b": {}}}, "two")
    trained = []

    def train_run(cfg, folder):
        from s2s.translation import train

        trained.append(folder.name)
        train(cfg, folder)

    sweep = cmp.read_sweep(second)
    cmp.compare(sweep, tmp_path / "two", train_run=train_run, reuse=[tmp_path / "one"])
    assert trained == ["seed-2"]  # seed 1 linked; seed 2 unfinished there: trained here
    linked = tmp_path / "two" / "b" / "seed-1"
    assert linked.is_symlink() and not (tmp_path / "two" / "b" / "seed-2").is_symlink()
    shutil.rmtree(tmp_path / "one")  # the reused sweep deleted: its links dangle
    trained.clear()
    report = cmp.compare(sweep, tmp_path / "two", train_run=train_run, reuse=[tmp_path / "one"])
    assert trained == ["seed-1"] and not linked.is_symlink() and linked.is_dir()
    assert len(report["variants"][0]["bleu"]) == 2
