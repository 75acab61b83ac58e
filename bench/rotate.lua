-- wrk: each request carries the next of the pre-created cookies (one per line in the file
-- COOKIES_FILE names), starting at a random one so wrk's threads spread over them.
local cookies = {}
for line in io.lines(os.getenv("COOKIES_FILE")) do cookies[#cookies + 1] = line end
local i = math.random(#cookies)
request = function()
  i = i % #cookies + 1
  return wrk.format("GET", nil, { ["Cookie"] = cookies[i] })
end
