"""``rrsis serve``: a local web page and JSON API around the one inference path.

- :mod:`~rrsis.serve.config`: :class:`ServeConfig` and the request :class:`Limits`.
- :mod:`~rrsis.serve.app`: the Starlette application and :func:`~rrsis.serve.app.serve`.
- :mod:`~rrsis.serve.api`: the JSON handlers; :mod:`~rrsis.serve.forms`: reading requests
  within the limits; :mod:`~rrsis.serve.images`: decoding and drawing images (and the map's
  grid); :mod:`~rrsis.serve.results`: the answer per expression; :mod:`~rrsis.serve.model`: the
  shared Segmenter.
- ``static/``: the page (``index.html``, ``app.js``, ``app.css``) and the vendored Leaflet.

Needs the ``serve`` extra (``pip install 'rrsis[serve]'``: Starlette, uvicorn, python-multipart).
"""
