"""`sfclip serve`: explore a checkpoint in the browser (text -> image search, zero-shot labels, heat maps).

`Explorer` (`explorer.py`) holds the model-side logic and needs only the core install; the web layer
(`server.py`: FastAPI + uvicorn, and the page in `static/`) needs `pip install 'sfclip[app]'`, so it is not
imported here.
"""

from .explorer import Explorer

__all__ = ["Explorer"]
