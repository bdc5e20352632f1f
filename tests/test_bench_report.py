"""benchmarks/common/report.py: write_section replaces its own section and keeps the others."""

from benchmarks.common import report


def test_write_section_creates_replaces_and_keeps_others(tmp_path):
    path = tmp_path / "results.md"
    report.write_section("a", "## A\nfirst", path)
    text = path.read_text()
    assert text.startswith(report.HEADER)
    assert "<!-- bench:a -->\n## A\nfirst\n<!-- /bench:a -->" in text

    report.write_section("b", "## B\nother", path)
    report.write_section("a", "## A\nsecond\n", path)  # replaced in place, not appended
    text = path.read_text()
    assert "first" not in text
    assert text.count("<!-- bench:a -->") == 1 and text.count("<!-- /bench:a -->") == 1
    assert text.index("## A\nsecond") < text.index("## B\nother")  # order kept
    assert "<!-- bench:b -->\n## B\nother\n<!-- /bench:b -->" in text


def test_write_section_keeps_text_outside_sections(tmp_path):
    path = tmp_path / "results.md"
    path.write_text("# Mine\n\nhand-written notes\n")
    report.write_section("a", "x", path)
    report.write_section("a", "y \\1 $0", path)  # replacement text is taken literally
    text = path.read_text()
    assert text.startswith("# Mine\n\nhand-written notes\n")
    assert "<!-- bench:a -->\ny \\1 $0\n<!-- /bench:a -->" in text
