"""The report renderer: every value a template prints is inert markdown."""

from neurotrain.reports.render import environment


def test_text_from_data_cannot_open_html_or_break_a_table(tmp_path):
    (tmp_path / "t.md.j2").write_text("| {{ name }} | {{ n | fmt }} |\n")
    out = environment(tmp_path).get_template("t.md.j2").render(name="<img src=x onerror=alert(1)>|evil", n=0.5)
    assert out == "| &lt;img src=x onerror=alert(1)>\\|evil | 0.500 |\n"
    assert "<img" not in out
    assert environment(tmp_path).from_string("{{ bar }}").render(bar="<= 5 deg") == "<= 5 deg"
