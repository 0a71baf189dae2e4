"""s2s compare: variants x seeds as ordinary run folders, resumable, and an honest report."""

import json
import math
import statistics

import pytest
import yaml
from conftest import SENTENCES, tiny_config_dict, write_corpus

from s2s.cli import main
from s2s.errors import ConfigError
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
    path.write_text(yaml.safe_dump(common | sweep))
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
