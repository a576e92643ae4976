"""Clients for edgestack servers."""

from clients.client import (AsyncClient, ClassifyResult, Client, EdgestackError, HTTPError, LabelScore, Prediction,
                            RequestError, ServerError, Unavailable)

__all__ = ["AsyncClient", "ClassifyResult", "Client", "EdgestackError", "HTTPError", "LabelScore", "Prediction",
           "RequestError", "ServerError", "Unavailable"]
