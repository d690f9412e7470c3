-- tag_rules.lua — automated tagging rules: which tags a file gets from its name, size and type.
--
-- The tagging module calls tags(file) for each new or changed file, through the kernel's
-- sandboxed Lua service (api->lua_call("tag_rules.lua", "tags", file)). `file` is a table:
--   file.name          the file name ("report.pdf"), always present
--   file.size          size in bytes (an integer), may be absent
--   file.content_type  the detected MIME type ("image/png"), may be absent
-- tags() returns a list of tag strings, without duplicates, in a stable order.
-- Edit freely: the file is read again on every call, so a change takes effect at once.

local LARGE = 100 * 1024 * 1024 -- bytes from which a file is "large"

-- Extension -> kind, used when the content type is missing or too generic.
local by_extension = {
  jpg = "image", jpeg = "image", png = "image", gif = "image", webp = "image", svg = "image",
  heic = "image", tif = "image", tiff = "image", bmp = "image",
  mp4 = "video", mkv = "video", mov = "video", webm = "video", avi = "video",
  mp3 = "audio", flac = "audio", ogg = "audio", wav = "audio", m4a = "audio", opus = "audio",
  pdf = "document", doc = "document", docx = "document", odt = "document", rtf = "document",
  xls = "spreadsheet", xlsx = "spreadsheet", ods = "spreadsheet", csv = "spreadsheet",
  ppt = "presentation", pptx = "presentation", odp = "presentation",
  txt = "text", md = "text",
  zip = "archive", tar = "archive", gz = "archive", tgz = "archive", xz = "archive",
  zst = "archive", ["7z"] = "archive", rar = "archive",
  c = "code", h = "code", lua = "code", py = "code", js = "code", go = "code", rs = "code",
  sh = "code",
}

-- Content type (prefix or exact) -> kind.
local by_type = {
  ["image/"] = "image", ["video/"] = "video", ["audio/"] = "audio",
  ["application/pdf"] = "document", ["text/plain"] = "text", ["text/markdown"] = "text",
  ["application/zip"] = "archive", ["application/gzip"] = "archive", ["application/x-tar"] = "archive",
}

local function kind_of_type(ct)
  if type(ct) ~= "string" then return nil end
  ct = ct:lower():match("^[^;%s]+") or ""
  if by_type[ct] then return by_type[ct] end
  local major = ct:match("^(%a+/)")
  return major and by_type[major] or nil
end

function tags(file)
  local out, seen = {}, {}
  local function add(tag)
    if tag and not seen[tag] then
      seen[tag] = true
      out[#out + 1] = tag
    end
  end

  local name = type(file.name) == "string" and file.name or ""
  local ext = name:lower():match("%.([%w]+)$")
  add(kind_of_type(file.content_type) or (ext and by_extension[ext]))

  local size = math.tointeger(file.size)
  if size then
    if size >= LARGE then add("large") end
    if size == 0 then add("empty") end
  end
  if name:sub(1, 1) == "." then add("hidden") end
  return out
end
