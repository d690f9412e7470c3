-- photos.lua — tag photos by the camera that took them (EXIF Make and Model, read by the search
-- module's extractor; file.exif is absent until the search module has read the image).
function rule(file)
  local exif = file.exif
  if not exif or not (exif.make or exif.model) then return {} end
  local out = {apply = {{tag = "photo", reason = "it has camera EXIF data"}}}
  if exif.model then
    out.apply[#out.apply + 1] = {tag = "camera:" .. exif.model:sub(1, 50), reason = "EXIF Model"}
  end
  return out
end
