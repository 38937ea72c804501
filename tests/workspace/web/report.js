// Builds a plain-text report of shapes and their areas.
const { formatArea, formatList } = require("./format");

function report(shapes) {
  const lines = [];
  for (const shape of shapes) {
    lines.push(`${shape.name}: ${formatArea(shape.area, "m")}`);
  }
  return lines.join("\n");
}

function names(shapes) {
  return formatList(shapes.map((shape) => shape.name));
}

module.exports = { report, names };
