"""Jobs that stay yours: who owns a job is the browser, not the Streamlit session.

A session's id changes with every reload and differs between tabs, so a job's Cancel used to vanish on a
reload. The browser instead keeps a random token in a cookie (`mergelab_owner`, set by a line of JavaScript,
since Streamlit 1.67 reads cookies (`st.context.cookies`, sent with the session's first request) but cannot
set them); a reload or a second tab of the same browser sends it back, and its hash is the owner recorded
with each job. The token is never in the URL, so a deep link shared with a class hands out no Cancel: another
browser has no cookie, gets a token of its own, and sees "another session's". The run log keeps only the
hash (truncated sha256), so it holds nothing that would make a cookie. Where no browser sent a cookie (the
first visit, AppTest), the session makes a token and the browser keeps it from then on.
"""

from __future__ import annotations

import hashlib
import re
import secrets

import streamlit as st

COOKIE = "mergelab_owner"
TOKEN_KEY = "_mergelab_owner_token"  # this session's token, in st.session_state
_VALID = re.compile(r"[A-Za-z0-9_-]{32,128}")
_YEAR_S = 365 * 24 * 3600


def owner() -> str:
    """The owner id recorded with the jobs this browser starts: a hash of its token."""
    return owner_of(_token())


def owner_of(token: str) -> str:
    """The owner id of a browser token (what the run log records)."""
    return hashlib.sha256(token.encode()).hexdigest()[:32]


def remember_browser() -> None:
    """Have the browser keep this session's token when it did not send it (call on every run, from app.py:
    the cookies Streamlit reads are those of the session's first request, so this repeats each run of a
    session that started without it; it draws nothing)."""
    token = _token()
    if _sent_cookie() != token:
        st.html(
            f"<script>document.cookie = '{COOKIE}={token}; path=/; max-age={_YEAR_S}; SameSite=Strict';</script>",
            unsafe_allow_javascript=True,
        )


def _token() -> str:
    if TOKEN_KEY not in st.session_state:
        sent = _sent_cookie()
        st.session_state[TOKEN_KEY] = sent if sent is not None else secrets.token_urlsafe(32)
    return st.session_state[TOKEN_KEY]


def _sent_cookie() -> str | None:
    """The browser's token, if it sent a well-formed one (anything else is replaced, never echoed)."""
    try:
        sent = st.context.cookies.get(COOKIE)
    except (AttributeError, RuntimeError):  # no browser request behind this run (AppTest, bare script)
        return None
    return sent if isinstance(sent, str) and _VALID.fullmatch(sent) else None  # AppTest's cookies: a mock
