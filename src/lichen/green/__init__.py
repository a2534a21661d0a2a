"""Energy and carbon accounting per service and per request.
"""
