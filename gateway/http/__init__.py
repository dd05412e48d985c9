"""The HTTP edge, shared by every route: authentication (`auth`), CORS (`cors`), rate and
stream limits (`limits`), trusted reverse proxies (`proxy`), metrics and access logs
(`observe`), the middleware stack in its order (`middleware`), problem+json errors
(`problems`), request bodies (`body`) and route helpers (`routing`)."""
