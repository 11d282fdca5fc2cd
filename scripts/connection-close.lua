-- wrk script: every request asks for Connection: close (a new TCP
-- connection per request, as HTTP/1.0 clients without keep-alive do).
wrk.headers["Connection"] = "close"
