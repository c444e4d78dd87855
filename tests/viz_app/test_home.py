"""Home lists every registered page with what it shows and the notebooks that go with it."""

from vizlib.registry import NOTEBOOKS, PAGES


def test_home_links_every_page_and_names_its_notebooks(open_page):
    at = open_page()
    links = at.get("page_link")
    # Streamlit links a page by its URL path: the same one the browser test opens
    assert [link.proto.page for link in links] == [p.url_path for p in PAGES]
    captions = [c.value for c in at.caption]
    for p in PAGES:
        assert any(all(f"`{nb}`" in c for nb in p.notebooks) for c in captions), p.title
    text = "\n".join(m.value for m in at.markdown)
    for name in NOTEBOOKS:
        assert f"notebooks/{name}.ipynb" in text
