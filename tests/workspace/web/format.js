// Formatting helpers for the shapes report page.

function formatArea(value, unit) {
  const rounded = Math.round(value * 100) / 100;
  return `${rounded} ${unit}²`;
}

function formatList(items) {
  if (items.length === 0) {
    return "nothing";
  }
  return items.join(", ");
}

module.exports = { formatArea, formatList };
