"""Loading models upstream through the best surface each upstream offers: LM Studio's Python
SDK (websocket), its `lms` CLI, or its REST v1 API. `surface.py` is the contract they share."""
