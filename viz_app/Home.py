"""minirt workbench dashboard — the home page: what each page shows and which notebook to read.

Run with `streamlit run viz_app/Home.py` (or `./workbench`, which starts it beside JupyterLab).
The pages come from `vizlib.registry.PAGES` (add a page there and it appears here); the
chapters from the notebooks folder itself.
"""

import streamlit as st

from vizlib.registry import FAVICON, NOTEBOOKS, PAGES, glossary_sections

st.set_page_config(page_title="minirt workbench", page_icon=FAVICON, layout="wide")

st.title("minirt workbench")
st.markdown(
    "Each page shows the **real runtime** at work — `minirt`'s engine, scheduler and block "
    "manager running the embedded model on this machine, or a trace it recorded — never a "
    "re-implementation. Read a page beside its notebook (`notebooks/<name>.ipynb`)."
)
GLOSSARY_LINK = "[Glossary · 术语表](#glossary): the course's terms in English and Chinese"
st.markdown(GLOSSARY_LINK + " (`notebooks/GLOSSARY.md`).")
st.sidebar.markdown(GLOSSARY_LINK + ".")

for page in PAGES:
    with st.container(border=True):
        st.page_link(page.file, label=f"**{page.title}**", icon=page.icon)
        st.markdown(page.shows)
        books = ", ".join(f"`{nb}` — {NOTEBOOKS[nb]}" for nb in page.notebooks)
        label = "Notebook" if len(page.notebooks) == 1 else "Notebooks"
        data = page.data.replace("*", "\\*")  # a glob, not markdown emphasis
        st.caption(f"{label}: {books}  ·  Data: {data}")

st.subheader("Notebooks")
chapters = []
for name, title in NOTEBOOKS.items():  # every notebooks/NN_<topic>.ipynb, in reading order
    pages = [p.title for p in PAGES if name in p.notebooks]
    shown = f" · page: {', '.join(pages)}" if pages else ""
    chapters.append(f"- `notebooks/{name}.ipynb` — {title}{shown}")
st.markdown("\n".join(chapters))
st.caption(
    "Start with `00_tour`. A trace of your own run: "
    '`python -m minirt generate "def fib(n):" --trace run.json`, then upload it on a page.'
)

st.subheader("Glossary · 术语表", anchor="glossary")
st.caption(
    "From `notebooks/GLOSSARY.md`, which every chapter links: each term in English and in the "
    "Chinese that practitioners write, with the chapter that teaches it."
)
for heading, body in glossary_sections():
    with st.expander(heading):
        st.markdown(body)
