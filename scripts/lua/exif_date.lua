-- exif_date.lua — tag photos with the year and month they were taken (EXIF DateTimeOriginal,
-- "2026:05:04 10:11:12" as the search module's extractor reports it).
function rule(file)
  local date = file.exif and file.exif.date
  if not date then return {} end
  local y, m = date:match("^(%d%d%d%d)[:%-](%d%d)")
  if not y then return {} end
  return {apply = {{tag = "taken:" .. y, reason = "EXIF date " .. date}, {tag = "taken:" .. y .. "-" .. m}}}
end
