"""Clients for edgestack servers."""

from clients.client import (AsyncClient, ClassifyResult, Client, EdgestackError, HTTPError, LabelScore, Prediction,
                            RequestError, ServerError, TextPrediction, TextResult, Tune, TuneEvent, Unavailable)
from clients.v2 import RemoteSession, V2Result

__all__ = ["AsyncClient", "ClassifyResult", "Client", "EdgestackError", "HTTPError", "LabelScore", "Prediction",
           "RemoteSession", "RequestError", "ServerError", "TextPrediction", "TextResult", "Tune", "TuneEvent",
           "Unavailable", "V2Result"]
