(function () {
  "use strict";
  var form = document.getElementById("filters");
  var table = document.getElementById("studies");
  if (!form || !table || !window.URLSearchParams) { return; }
  var rows = Array.prototype.slice.call(table.tBodies[0].rows);
  var titles = rows.map(function (row) { return row.cells[0].textContent.toLowerCase(); });
  var count = document.getElementById("count");
  var names = ["pem", "criteria", "from", "to", "q"];

  function readLocation() {
    var raw = location.href.indexOf("#") !== -1 ? location.hash.slice(1) : location.search.slice(1);
    var params = new URLSearchParams(raw);
    names.forEach(function (name) {
      var field = form.elements[name];
      field.value = params.get(name) || "";
      if (field.tagName === "SELECT" && field.selectedIndex === -1) { field.selectedIndex = 0; }
    });
  }

  function writeLocation() {
    var params = new URLSearchParams();
    names.forEach(function (name) {
      var value = form.elements[name].value.trim();
      if (value) { params.set(name, value); }
    });
    try { history.replaceState(null, "", "#" + params.toString()); } catch (e) { /* some file: views refuse */ }
  }

  function apply() {
    var pem = form.elements.pem.value;
    var criterion = form.elements.criteria.value;
    var from = parseInt(form.elements.from.value, 10);
    var to = parseInt(form.elements.to.value, 10);
    var query = form.elements.q.value.trim().toLowerCase();
    var shown = 0;
    rows.forEach(function (row, i) {
      var year = parseInt(row.getAttribute("data-year"), 10);
      var match = (!pem || row.getAttribute("data-pem") === pem) &&
        (!criterion || (" " + row.getAttribute("data-criteria") + " ").indexOf(" " + criterion + " ") !== -1) &&
        (isNaN(from) || year >= from) &&
        (isNaN(to) || year <= to) &&
        (!query || titles[i].indexOf(query) !== -1);
      row.hidden = !match;
      if (match) { shown += 1; }
    });
    count.textContent = "Showing " + shown + " of " + rows.length + " studies";
  }

  function changed() { apply(); writeLocation(); }

  form.addEventListener("input", changed);
  form.addEventListener("change", changed);
  form.addEventListener("submit", function (event) { event.preventDefault(); });
  form.addEventListener("reset", function () { setTimeout(changed, 0); });
  window.addEventListener("hashchange", function () { readLocation(); apply(); });
  readLocation();
  apply();
  form.hidden = false;
  document.documentElement.setAttribute("data-filters", "ready");
}());
