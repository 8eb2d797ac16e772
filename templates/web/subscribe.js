// Prefill the timezone from the browser, unless the reader already typed one.
(function () {
  var field = document.getElementById("timezone");
  if (!field || field.value !== field.getAttribute("data-default")) return;
  try {
    var zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
    if (zone) field.value = zone;
  } catch (e) { /* old browser: keep the default */ }
})();
