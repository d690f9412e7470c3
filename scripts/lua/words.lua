-- words.lua — suggest tags from words in a file's text (extracted by the search module) or, for
-- plain text, its first bytes. Suggestions wait for a person to accept or dismiss them.
local topics = {
  contract = {"contract", "agreement", "terms and conditions"},
  medical = {"diagnosis", "prescription", "patient"},
  travel = {"boarding pass", "itinerary", "hotel reservation"},
}

function rule(file)
  local text = (file.text or file.head or ""):lower()
  local out = {suggest = {}}
  for tag, words in pairs(topics) do
    for _, w in ipairs(words) do
      if text:find(w, 1, true) then
        out.suggest[#out.suggest + 1] = {tag = tag, reason = "mentions '" .. w .. "'"}
        break
      end
    end
  end
  table.sort(out.suggest, function(a, b) return a.tag < b.tag end)
  return out
end
