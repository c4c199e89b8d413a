"""MoCA-NAS dashboard entry point: st.navigation over the four pages and the shared sidebar (workspace, studies, runs)."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

# The pages live in app_pages/, not pages/: Streamlit treats a pages/ folder next to the entry script as a
# legacy multipage app, and a first request to a deep link (e.g. /results after a restart) would then run
# the page alone, without this file's navigation and sidebar.
from app_pages import common

# A local file: an icon name (":material/...:") makes the browser fetch the favicon from the internet.
FAVICON = str(Path(__file__).resolve().parent / "assets" / "favicon.png")
st.set_page_config(page_title="MoCA-NAS", page_icon=FAVICON, layout="wide")

PAGES = [
    st.Page("app_pages/search.py", title="Search", icon=":material/play_circle:", default=True),
    st.Page("app_pages/results.py", title="Results", icon=":material/table_chart:"),
    st.Page("app_pages/best_model.py", title="Best Model", icon=":material/emoji_events:"),
    st.Page("app_pages/analytics.py", title="Analytics", icon=":material/insights:"),
]

page = st.navigation(PAGES)
common.sidebar()
page.run()
