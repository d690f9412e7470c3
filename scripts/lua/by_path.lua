-- by_path.lua — tag by where a file is: anything under a folder named "Taxes" or "Steuer" gets
-- "taxes", under "Projects/<name>/" it gets "project:<name>".
function rule(file)
  local out = {apply = {}}
  local p = "/" .. file.path:lower()
  if p:find("/taxes/", 1, true) or p:find("/steuer/", 1, true) then
    out.apply[#out.apply + 1] = {tag = "taxes", reason = "in a taxes folder"}
  end
  local project = file.path:match("^[Pp]rojects/([^/]+)/")
  if project then out.apply[#out.apply + 1] = {tag = "project:" .. project:sub(1, 50)} end
  return out
end
