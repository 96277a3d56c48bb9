"""The web service (``mvr serve``): the REST API and the dashboard page over one catalog.

* :mod:`mvr.web.app`: the application and its routes; :mod:`mvr.web.settings`: how it runs;
* :mod:`mvr.web.models`: the API's typed models;
* :mod:`mvr.web.jobs`: query jobs on a bounded pool of workers;
* :mod:`mvr.web.uploads`: storing uploaded files; ``static/``: the page.
"""

from mvr.web.app import create_app, serve
from mvr.web.settings import ServiceSettings

__all__ = ["ServiceSettings", "create_app", "serve"]
