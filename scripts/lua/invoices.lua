-- invoices.lua — tag invoices: PDFs whose text (from the search module) or name says "invoice".
-- A rule for the tags module (docs/rules.md): rule(file) returns {apply=..., suggest=...}.
local words = {"invoice", "rechnung", "facture", "factura"}

function rule(file)
  local name = file.name:lower()
  local text = (file.text or ""):lower()
  for _, w in ipairs(words) do
    if text:find(w, 1, true) then
      return {apply = {{tag = "invoice", reason = "the text says '" .. w .. "'"}}}
    end
    if name:find(w, 1, true) then
      return {suggest = {{tag = "invoice", reason = "the name says '" .. w .. "'"}}}
    end
  end
  return {}
end
