"""``docs/ice-tester.png`` (shown in the README) is current: taken from the page's present
source (``make screenshot`` takes it again, in headless Chromium after a successful run)."""

from __future__ import annotations

from tests.browser.screenshot import KEY, ROOT, SCREENSHOT, source_digest, texts, with_text


def test_the_committed_screenshot_shows_the_current_page() -> None:
    assert SCREENSHOT.is_file(), "docs/ice-tester.png is missing: run make screenshot"
    recorded = texts(SCREENSHOT.read_bytes()).get(KEY)
    assert recorded == source_digest(), (
        "relay/gateway/tester/ changed since docs/ice-tester.png was taken: run make screenshot"
    )
    assert "docs/ice-tester.png" in (ROOT / "README.md").read_text(encoding="utf-8")


def test_the_recorded_digest_reads_back_and_a_damaged_file_is_refused() -> None:
    png = SCREENSHOT.read_bytes()
    again = with_text(png, "other", "value")
    assert texts(again) == {KEY: source_digest(), "other": "value"}
    try:
        texts(b"GIF89a" + png[8:])
    except ValueError as error:
        assert "not a PNG" in str(error)
    else:
        raise AssertionError("a file that is no PNG was read")
