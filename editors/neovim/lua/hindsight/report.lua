-- Tells the server what became of each suggestion shown: hindsight/didShow, didPartiallyAccept and
-- didReject. A full accept is the item's own command (hindsight.accept), run by whoever inserts it.
-- Typing over a suggestion needs no message: the server sees the edit and records `typed_over` itself.
local lsp = require('hindsight.lsp')

local M = {}

---@class hindsight.Shown
---@field id string
---@field client_id integer
---@field accepted integer characters of the item accepted so far (accept word / line)

---@type table<integer, hindsight.Shown>
local shown = {}

--- The suggestion id an item carries in its accept command, if any.
function M.item_id(item)
  local args = item and item.command and item.command.arguments
  local first = args and args[1]
  return type(first) == 'table' and first.id or nil
end

local function notify(client_id, method, params)
  local client = vim.lsp.get_client_by_id(client_id)
  if client then
    lsp.notify(client, method, params)
  end
end

--- An item is on screen in `bufnr`; a different one before it that is still open was superseded (the
--- server records that when it answers the newer request).
function M.show(bufnr, client_id, item)
  local id = M.item_id(item)
  if not id then
    return
  end
  local current = shown[bufnr]
  if current and current.id == id then
    return
  end
  shown[bufnr] = { id = id, client_id = client_id, accepted = 0 }
  notify(client_id, 'hindsight/didShow', { id = id })
end

--- The suggestion on screen in `bufnr`, if any.
---@return hindsight.Shown?
function M.current(bufnr)
  return shown[bufnr]
end

--- `n` more characters of it were accepted (a word or a line).
function M.partial(bufnr, n)
  local current = shown[bufnr]
  if current then
    current.accepted = current.accepted + n
    notify(current.client_id, 'hindsight/didPartiallyAccept', { id = current.id, acceptedLength = current.accepted })
  end
end

--- It was accepted whole, or typed over, or replaced by a newer one: nothing more to say about it.
function M.settle(bufnr)
  shown[bufnr] = nil
end

--- It was turned down: `dismissed` (the dismiss key, or leaving insert mode) or `cursor_moved`.
function M.reject(bufnr, reason)
  local current = shown[bufnr]
  if current then
    shown[bufnr] = nil
    notify(current.client_id, 'hindsight/didReject', { id = current.id, reason = reason })
  end
end

return M
