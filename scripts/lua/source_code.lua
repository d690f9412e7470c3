-- source_code.lua — tag source code by extension, or by a "#!" interpreter line in its first bytes.
local languages = {
  c = "c", h = "c", cc = "c++", cpp = "c++", hpp = "c++", py = "python", lua = "lua", js = "javascript",
  ts = "typescript", go = "go", rs = "rust", java = "java", rb = "ruby", sh = "shell", php = "php",
}

function rule(file)
  local lang = languages[file.extension]
  if not lang then
    local interp = file.head:match("^#!%S*/env%s+(%a+)") or file.head:match("^#!%S*/(%a+)")
    if interp == "python3" or interp == "python" then lang = "python"
    elseif interp == "bash" or interp == "sh" then lang = "shell" end
  end
  if not lang then return {} end
  return {apply = {"code", {tag = "lang:" .. lang, reason = "extension or #! line"}}}
end
