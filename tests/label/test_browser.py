"""The labeling page in a real browser: Playwright driving Debian's chromium (installed by `make test`
and `.ci/run`; never downloaded by playwright) against `dalkit label serve` on 300 real MNIST digits
written as PNG files.  Labels by click and key, undo, "none of these", train-and-query-next, then the
journal, the next batch and the out-of-distribution item are checked, and the round's progress bar is
seen to move through the epochs and finish.  Keeps a screenshot in tests/artifacts/."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from tests.label.conftest import CHROMIUM_ARGS, start_server

from dalkit.label import Project

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).parents[1] / "artifacts"
TOKEN = "browser-test-token"
# enough for the page's poll (every 250 ms) to see the round's bar between empty and full: 60 epochs of
# 11 labels trained in under 250 ms on an idle machine, and the bar went from 0 straight to 100 %
EPOCHS = 400

# records every width of the round's progress bar and every text of the round's line, in order
WATCH_ROUND_JS = """() => {
  window.roundWidths = []; window.roundTexts = [];
  const bar = document.getElementById("round-bar"), text = document.getElementById("round");
  new MutationObserver(() => window.roundWidths.push(bar.style.width))
    .observe(bar, { attributes: true, attributeFilter: ["style"] });
  new MutationObserver(() => window.roundTexts.push(text.textContent))
    .observe(text, { childList: true, characterData: true, subtree: true });
}"""


@pytest.fixture
def served(tmp_path, mnist_pngs):
    folder, labels = mnist_pngs
    Project.create(tmp_path / "p", folder, [str(c) for c in range(10)], initial_size=12, budget=8,
                   method="margin", train={"epochs": EPOCHS})
    Project(tmp_path / "p").next_batch()
    proc, base = start_server(tmp_path / "p", TOKEN)
    yield tmp_path / "p", base, labels
    proc.kill()
    proc.wait()


def test_label_a_batch_in_chromium(served):
    from playwright.sync_api import expect, sync_playwright

    project, base, labels = served
    assert Path(CHROMIUM).exists(), "Debian's chromium is missing: apt-get install chromium (make test does)"
    proj = Project(project)
    truth = {it.item: str(labels[int(it.path[:5])]) for it in proj.items}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1100})
        page.goto(f"{base}/?token={TOKEN}")
        cards = page.locator(".card")
        expect(cards).to_have_count(12)
        items = [cards.nth(i).get_attribute("data-item") for i in range(12)]
        assert items == proj.current_batch()["items"]
        # cards 0-4 by clicking the class button
        for i in range(5):
            cards.nth(i).locator(f"button[data-label='{truth[items[i]]}']").click()
            expect(cards.nth(i)).to_have_class(re.compile(r"\bdone\b"))
        # cards 5-9 by keys: click the card to focus it, press the class's key (the digit itself)
        for i in range(5, 10):
            cards.nth(i).locator("img").click()
            page.keyboard.press(truth[items[i]])
            expect(cards.nth(i).locator(".answer")).to_have_text(f"label: {truth[items[i]]}")
        # a wrong label on card 10, then undo it with u
        wrong = str((int(truth[items[10]]) + 1) % 10)
        cards.nth(10).locator("img").click()
        page.keyboard.press(wrong)
        expect(cards.nth(10).locator(".answer")).to_have_text(f"label: {wrong}")
        page.keyboard.press("u")
        expect(cards.nth(10).locator(".answer")).to_have_text("")
        cards.nth(10).locator(f"button[data-label='{truth[items[10]]}']").click()
        expect(cards.nth(10)).to_have_class(re.compile(r"\bdone\b"))
        # card 11: none of these classes
        cards.nth(11).locator("button.ood-btn").click()
        expect(cards.nth(11)).to_have_class(re.compile(r"\bood\b"))
        expect(page.locator("#progress-text")).to_have_text("batch 0: 12 / 12")
        # what the page confirmed is in the journal, nothing else
        state = Project(project).state()
        assert {i: s.label for i, s in state.items() if not s.ood} == {i: truth[i] for i in items[:11]}
        assert [i for i, s in state.items() if s.ood] == [items[11]]
        ops = [(e["op"], e["item"], e.get("label"), e["source"]) for e in Project(project).journal.read()]
        assert ("undo", items[10], None, "page") in ops and ("label", items[10], wrong, "page") in ops
        assert len(ops) == 14  # 11 labels + the wrong one + its undo + one ood
        # train and query the next batch in the background; the page keeps answering meanwhile
        expect(page.locator("#round-progress")).to_be_hidden()  # no round yet in this server's life
        page.evaluate(WATCH_ROUND_JS)
        page.click("#next")
        expect(page.locator("#round")).to_contain_text("round")
        page.wait_for_function("document.body.dataset.batch === '1'", timeout=120_000)
        expect(cards).to_have_count(8)
        # the round's bar moved through the epochs (fed by fit()'s epoch callback) and finished
        widths = [float(w.rstrip("%")) for w in page.evaluate("window.roundWidths")]
        texts = page.evaluate("window.roundTexts")
        assert widths == sorted(widths) and widths[-1] == 100, widths
        assert any(0 < w < 100 for w in widths), f"the bar never showed a round in progress: {widths}"
        epochs_seen = [int(m.group(1)) for t in texts if (m := re.search(rf"epoch (\d+) / {EPOCHS}", t))]
        assert epochs_seen and epochs_seen == sorted(epochs_seen), texts
        expect(page.locator("#round")).to_contain_text("round done in")
        expect(page.locator("#round")).to_contain_text(f"({EPOCHS} epochs)")
        expect(page.locator("#round-progress")).to_have_attribute("aria-valuenow", "100")
        new_items = [cards.nth(i).get_attribute("data-item") for i in range(8)]
        batch = Project(project).current_batch()
        assert new_items == batch["items"] and batch["round"] == 0 and batch["n_trained"] == 11
        assert items[11] not in new_items and not set(items) & set(new_items)
        guesses = [cards.nth(i).locator(".guess").inner_text() for i in range(8)]
        assert guesses == [f"guess {proj.classes[g]}" for g in batch["guess"]]
        expect(page.locator("#counts")).to_contain_text("11 labeled")
        page.click("#show-map")
        page.wait_for_function("document.getElementById('map-img').naturalWidth > 0", timeout=60_000)
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "label_page.png"), full_page=True)
        browser.close()
    assert (ARTIFACTS / "label_page.png").stat().st_size > 10_000
