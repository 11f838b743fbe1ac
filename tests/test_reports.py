"""The report renderer: every value a template prints is inert markdown."""

from neurotrain.reports.render import environment


def test_text_from_data_cannot_open_html_or_break_a_table(tmp_path):
    (tmp_path / "t.md.j2").write_text("| {{ name }} | {{ n | fmt }} |\n")
    out = environment(tmp_path).get_template("t.md.j2").render(name="<img src=x onerror=alert(1)>|evil", n=0.5)
    assert out == "| &lt;img src=x onerror=alert(1)>\\|evil | 0.500 |\n"
    assert "<img" not in out
    assert environment(tmp_path).from_string("{{ bar }}").render(bar="<= 5 deg") == "<= 5 deg"


def test_pooled_mean_sd_and_t_interval():
    """The seeds pooled: mean, SD with ddof 1 and the 95% t-interval of the mean (scipy's
    t.interval); a single seed has no spread; text and non-finite values are left out."""
    import math

    import numpy as np
    from scipy import stats

    from neurotrain.reports.aggregate import pooled

    x = [0.91, 0.87, 0.95]
    p = pooled(x)
    assert p["n"] == 3 and math.isclose(p["mean"], np.mean(x)) and math.isclose(p["sd"], np.std(x, ddof=1))
    lo, hi = stats.t.interval(0.95, 2, loc=np.mean(x), scale=stats.sem(x))
    assert np.allclose(p["ci95"], [lo, hi])
    assert pooled([0.5]) == {"n": 1, "mean": 0.5, "sd": None, "ci95": None}
    assert pooled(["n/a", None, float("nan"), 2.0, 4.0])["n"] == 2
    assert pooled([]) == {"n": 0, "mean": None, "sd": None, "ci95": None}


def test_reference_texts_pooled_over_seeds():
    """A headline's reference text per seed ("mean 0.955") pools into one: the numbers that
    differ become mean ± SD at the decimals shown, the rest stays; texts that differ in words are
    listed."""
    from neurotrain.reports.aggregate import pooled_text

    assert pooled_text(["mean 0.955", "mean 0.983", "mean 0.970"]) == "mean 0.969 ± 0.014"
    assert pooled_text(["raw 0.741 at FAP 1e-2", "raw 0.745 at FAP 1e-2"]) == "raw 0.743 ± 0.003 at FAP 1e-2"
    assert pooled_text(["untrained 12 deg", "untrained 12 deg"]) == "untrained 12 deg"
    assert pooled_text(["ground truth", "raw spikes 0.7"]) == "ground truth / raw spikes 0.7"
    assert pooled_text([]) == ""
