-- The few client calls whose form changed in Neovim 0.11 (methods take `self`), in one place.
local M = {}

local method_calls = vim.fn.has('nvim-0.11') == 1

-- client:name(...) on 0.11+, client.name(...) before.
local function call(client, name, ...)
  if method_calls then
    return client[name](client, ...)
  end
  return client[name](...)
end

function M.request(client, method, params, handler, bufnr)
  return call(client, 'request', method, params, handler, bufnr)
end

function M.request_sync(client, method, params, timeout_ms, bufnr)
  return call(client, 'request_sync', method, params, timeout_ms, bufnr)
end

function M.notify(client, method, params)
  return call(client, 'notify', method, params)
end

function M.cancel(client, request_id)
  call(client, 'cancel_request', request_id)
end

--- Run a server command (workspace/executeCommand); `on_done(err, result)` is optional.
function M.exec(client, command, bufnr, on_done)
  local params = { command = command.command, arguments = command.arguments }
  M.request(client, 'workspace/executeCommand', params, function(err, result)
    if on_done then
      on_done(err, result)
    end
  end, bufnr)
end

--- The hindsight client attached to `bufnr` (or any hindsight client when bufnr is nil).
function M.client(bufnr)
  local clients = vim.lsp.get_clients({ name = 'hindsight', bufnr = bufnr })
  return clients[1]
end

--- The item's text, whether a plain string or a snippet ({kind, value}); nil when there is none.
function M.item_text(item)
  local text = item and item.insertText
  if type(text) == 'table' then
    text = text.value
  end
  if type(text) == 'string' and text ~= '' then
    return text
  end
end

return M
