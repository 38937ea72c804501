-- The plugin's own ghost text, for Neovim 0.10 and 0.11 (and anyone who sets `builtin = false`): asks
-- the server after a typing pause, draws the suggestion with an extmark (inline for the first line,
-- virtual lines below for the rest), follows the user typing along it, accepts all or part of it.
local lsp = require('hindsight.lsp')
local piece = require('hindsight.piece')
local report = require('hindsight.report')

local api = vim.api
local ns = api.nvim_create_namespace('hindsight')
local M = { ns = ns }

---@class hindsight.GhostState
---@field client_id integer
---@field items table[]? the server's items; nil when nothing is shown
---@field index integer
---@field anchor integer[] {row, col} (0-based, bytes) where the item's text starts
---@field typed integer bytes of the item's text already in the buffer (typed along, or accepted)
---@field tick integer changedtick when last drawn or checked
---@field cursor integer[] cursor when last drawn or checked
---@field timer uv.uv_timer_t?
---@field pending integer? id of the request in flight
---@field quiet_tick integer? after a dismissal, no automatic request until the buffer changes
---@field cycle_after integer? cycle this way once the alternatives asked for arrive

---@type table<integer, hindsight.GhostState>
local state = {}
local opts

local function cursor()
  local pos = api.nvim_win_get_cursor(0)
  return { pos[1] - 1, pos[2] }
end

local function same(a, b)
  return a and b and a[1] == b[1] and a[2] == b[2]
end

local function remaining(st)
  local item = st.items and st.items[st.index]
  local text = lsp.item_text(item)
  return text and text:sub(st.typed + 1) or ''
end

local function display(line)
  return (line:gsub('\t', string.rep(' ', vim.bo.tabstop)))
end

local function draw(bufnr)
  local st = state[bufnr]
  api.nvim_buf_clear_namespace(bufnr, ns, 0, -1)
  local rest = st and remaining(st) or ''
  if rest == '' then
    return
  end
  local lines = vim.split(rest, '\n', { plain = true })
  local hint = #st.items > 1 and (' (%d/%d)'):format(st.index, #st.items) or nil
  local virt_lines = {}
  for i = 2, #lines do
    virt_lines[#virt_lines + 1] = { { display(lines[i]), opts.hl_group } }
  end
  local first = { { display(lines[1]), opts.hl_group } }
  local last = #virt_lines > 0 and virt_lines[#virt_lines] or first
  if hint then
    last[#last + 1] = { hint, 'Comment' }
  end
  local row, col = unpack(cursor())
  api.nvim_buf_set_extmark(bufnr, ns, row, col, {
    virt_text = first,
    virt_text_pos = 'inline',
    virt_lines = #virt_lines > 0 and virt_lines or nil,
    hl_mode = 'combine',
  })
end

local function clear(bufnr)
  local st = state[bufnr]
  if st then
    st.items = nil
  end
  if api.nvim_buf_is_valid(bufnr) then
    api.nvim_buf_clear_namespace(bufnr, ns, 0, -1)
  end
end

local function stop_timer(st)
  if st.timer then
    st.timer:stop()
    st.timer:close()
    st.timer = nil
  end
end

local function cancel_pending(st)
  if st.pending then
    local client = vim.lsp.get_client_by_id(st.client_id)
    if client then
      lsp.cancel(client, st.pending)
    end
    st.pending = nil
  end
end

-- Stop asking, and take the suggestion on screen down as dismissed (leaving insert mode, turning off).
local function quiet(bufnr)
  local st = state[bufnr]
  stop_timer(st)
  cancel_pending(st)
  if st.items then
    clear(bufnr)
    report.reject(bufnr, 'dismissed')
  end
end

--- Ask the server now. `kind` 1 = invoked by the user, 2 = automatic.
function M.request(bufnr, kind)
  local st = state[bufnr]
  local client = st and vim.lsp.get_client_by_id(st.client_id)
  if not client or api.nvim_get_current_buf() ~= bufnr then
    return
  end
  stop_timer(st)
  cancel_pending(st)
  local params = vim.lsp.util.make_position_params(0, client.offset_encoding)
  params.context = { triggerKind = kind }
  local tick, at = api.nvim_buf_get_changedtick(bufnr), cursor()
  local ok, id
  ok, id = lsp.request(client, 'textDocument/inlineCompletion', params, function(err, result)
    if st.pending == id then
      st.pending = nil
    end
    local stale = api.nvim_get_current_buf() ~= bufnr
      or api.nvim_buf_get_changedtick(bufnr) ~= tick
      or not same(cursor(), at)
      or not api.nvim_get_mode().mode:match('^i')
    if err or stale or not result then
      return
    end
    local items = {}
    for _, item in ipairs(result.items or result) do
      if lsp.item_text(item) then
        items[#items + 1] = item
      end
    end
    if #items == 0 then
      return
    end
    st.items, st.index, st.anchor, st.typed = items, 1, at, 0
    st.tick, st.cursor = tick, at
    draw(bufnr)
    report.show(bufnr, st.client_id, items[1])
    local count = st.cycle_after
    st.cycle_after = nil
    if count and #items > 1 then
      M.cycle(bufnr, count)
    end
  end, bufnr)
  st.pending = ok and id or nil
end

local function schedule_request(bufnr)
  local st = state[bufnr]
  stop_timer(st)
  if not M.enabled or not opts.auto_trigger or st.quiet_tick == api.nvim_buf_get_changedtick(bufnr) then
    return
  end
  st.timer = vim.defer_fn(function()
    st.timer = nil
    if api.nvim_buf_is_valid(bufnr) and api.nvim_get_mode().mode:match('^i') then
      M.request(bufnr, 2)
    end
  end, opts.debounce_ms)
end

-- After any edit or cursor move in insert mode: follow typing along the suggestion, or drop it.
local function on_activity(bufnr)
  local st = state[bufnr]
  local tick, at = api.nvim_buf_get_changedtick(bufnr), cursor()
  if tick == st.tick and same(at, st.cursor) then
    return
  end
  local edited = tick ~= st.tick
  st.tick, st.cursor = tick, at
  if st.items then
    local text = lsp.item_text(st.items[st.index])
    local a = st.anchor
    local typed = (at[1] > a[1] or (at[1] == a[1] and at[2] >= a[2]))
      and table.concat(api.nvim_buf_get_text(bufnr, a[1], a[2], at[1], at[2], {}), '\n')
    if edited and typed and #typed < #text and text:sub(1, #typed) == typed then
      st.typed = #typed -- typing along: show the rest, no new request
      draw(bufnr)
      return
    end
    clear(bufnr)
    if edited then
      report.settle(bufnr) -- typed over it (or typed it all): the server sees the edit itself
    else
      report.reject(bufnr, 'cursor_moved')
    end
  end
  schedule_request(bufnr)
end

function M.attach(bufnr, client_id, options)
  opts = options
  if state[bufnr] then
    state[bufnr].client_id = client_id
    return
  end
  state[bufnr] = { client_id = client_id, index = 1, typed = 0, tick = -1, cursor = { -1, -1 } }
  local group = api.nvim_create_augroup('hindsight_ghost_' .. bufnr, { clear = true })
  api.nvim_create_autocmd({ 'TextChangedI', 'CursorMovedI' }, {
    group = group,
    buffer = bufnr,
    callback = function()
      on_activity(bufnr)
    end,
  })
  api.nvim_create_autocmd('InsertEnter', {
    group = group,
    buffer = bufnr,
    callback = function()
      local st = state[bufnr]
      st.tick, st.cursor = api.nvim_buf_get_changedtick(bufnr), cursor()
      schedule_request(bufnr)
    end,
  })
  api.nvim_create_autocmd({ 'InsertLeave', 'BufLeave' }, {
    group = group,
    buffer = bufnr,
    callback = function()
      quiet(bufnr)
    end,
  })
  api.nvim_create_autocmd({ 'BufWipeout', 'LspDetach' }, {
    group = group,
    buffer = bufnr,
    callback = function()
      M.detach(bufnr)
    end,
  })
end

function M.detach(bufnr)
  local st = state[bufnr]
  if st then
    stop_timer(st)
    clear(bufnr)
    pcall(api.nvim_del_augroup_by_name, 'hindsight_ghost_' .. bufnr)
    state[bufnr] = nil
  end
end

--- The rest of the suggestion on screen in `bufnr` (nil when none).
function M.visible(bufnr)
  local st = state[bufnr]
  local rest = st and st.items and remaining(st)
  return rest ~= '' and rest or nil
end

--- Accept `part` ('all' | 'word' | 'line') of the suggestion on screen; false when there is none.
function M.accept(bufnr, part)
  local st = state[bufnr]
  local rest = M.visible(bufnr)
  if not rest then
    return false
  end
  local item = st.items[st.index]
  local taken = piece.take(rest, part)
  piece.insert(bufnr, taken)
  st.tick, st.cursor = api.nvim_buf_get_changedtick(bufnr), cursor()
  if taken == rest then
    clear(bufnr)
    report.settle(bufnr)
    local client = vim.lsp.get_client_by_id(st.client_id)
    if client and item.command then
      lsp.exec(client, item.command, bufnr)
    end
  else
    st.typed = st.typed + #taken
    report.partial(bufnr, vim.fn.strchars(taken))
    draw(bufnr)
  end
  return true
end

--- Show the next (count 1) or previous (count -1) suggestion; asks the server when there is none.
function M.cycle(bufnr, count)
  local st = state[bufnr]
  if not st then
    return
  end
  if not st.items or #st.items == 1 then
    st.cycle_after = st.items and count or nil
    M.request(bufnr, 1) -- asked for: the server adds alternatives
    return
  end
  local done = table.concat(api.nvim_buf_get_text(bufnr, st.anchor[1], st.anchor[2], st.cursor[1], st.cursor[2], {}), '\n')
  for step = 1, #st.items - 1 do
    local i = (st.index - 1 + count * step) % #st.items + 1
    local text = lsp.item_text(st.items[i])
    if text:sub(1, #done) == done and #text > #done then
      st.index = i
      draw(bufnr)
      report.show(bufnr, st.client_id, st.items[i])
      return
    end
  end
end

--- Hide the suggestion on screen and tell the server it was dismissed; false when there is none.
function M.dismiss(bufnr)
  local st = state[bufnr]
  if not (st and st.items) then
    return false
  end
  clear(bufnr)
  st.quiet_tick = api.nvim_buf_get_changedtick(bufnr)
  report.reject(bufnr, 'dismissed')
  return true
end

M.enabled = true

function M.enable(on)
  M.enabled = on
  if not on then
    for bufnr in pairs(state) do
      quiet(bufnr)
    end
  end
end

return M
