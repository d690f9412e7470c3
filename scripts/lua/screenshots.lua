-- screenshots.lua — tag screenshots by the names screenshot tools give (PNG files).
local patterns = {"^screenshot", "^screen shot", "^bildschirmfoto", "^capture d.écran", "^scrot"}

function rule(file)
  if file.extension ~= "png" and file.head:sub(2, 4) ~= "PNG" then return {} end
  local name = file.name:lower()
  for _, p in ipairs(patterns) do
    if name:find(p) then return {apply = {{tag = "screenshot", reason = "named like a screenshot"}}} end
  end
  return {}
end
