-- Neovim 0.12's own inline completion (vim.lsp.inline_completion) does the requests, the ghost text,
-- accepting and cycling. What it lacks, this adds: telling the server what was shown and what became of
-- it, accepting a word or a line, and dismissing.
local lsp = require('hindsight.lsp')
local piece = require('hindsight.piece')
local report = require('hindsight.report')

local api = vim.api
local ic = vim.lsp.inline_completion
local M = {}

---@class hindsight.BuiltinState
---@field client_id integer
---@field items table[]? the server's last items for this buffer
---@field index integer the one on screen (mirrors the built-in's own count)
---@field tick integer
---@field cursor integer[]
---@field cycle_after integer? cycle this way once the alternatives asked for arrive

---@type table<integer, hindsight.BuiltinState>
local state = {}

local function cursor()
  local pos = api.nvim_win_get_cursor(0)
  return { pos[1] - 1, pos[2] }
end

local function shown(bufnr)
  local st = state[bufnr]
  return st and st.items and st.items[st.index]
end

-- The built-in asks with its own callback, so the client's handlers never see the answer. Wrap this
-- client's request to learn which item it puts on screen (it shows the first one it gets).
local function watch_answers(client)
  if client._hindsight_watched then
    return
  end
  client._hindsight_watched = true
  local request = client.request
  client.request = function(self, method, params, handler, bufnr)
    if method == 'textDocument/inlineCompletion' and handler then
      local inner = handler
      handler = function(err, result, ctx, config)
        inner(err, result, ctx, config)
        local b = ctx and ctx.bufnr or bufnr
        local st = b and state[b]
        if st and not err and result then
          st.items, st.index = result.items or result, 1
          st.tick, st.cursor = api.nvim_buf_get_changedtick(b), cursor()
          if shown(b) and api.nvim_get_mode().mode:match('^i') then
            report.show(b, st.client_id, shown(b))
            local count = st.cycle_after
            st.cycle_after = nil
            if count and #st.items > 1 then
              M.cycle(b, count)
            end
          end
        end
      end
    end
    return request(self, method, params, handler, bufnr)
  end
end

function M.attach(bufnr, client_id)
  local client = vim.lsp.get_client_by_id(client_id)
  if not client then
    return
  end
  watch_answers(client)
  if state[bufnr] then
    return
  end
  state[bufnr] = { client_id = client_id, index = 1, tick = -1, cursor = { -1, -1 } }
  if M.enabled then
    ic.enable(true, { bufnr = bufnr })
  end
  local group = api.nvim_create_augroup('hindsight_builtin_' .. bufnr, { clear = true })
  api.nvim_create_autocmd({ 'TextChangedI', 'CursorMovedI' }, {
    group = group,
    buffer = bufnr,
    callback = function()
      local st = state[bufnr]
      local tick, at = api.nvim_buf_get_changedtick(bufnr), cursor()
      if st.items and not (tick == st.tick and at[1] == st.cursor[1] and at[2] == st.cursor[2]) then
        st.items = nil
        if tick ~= st.tick then
          report.settle(bufnr) -- typed over or along: the server follows the edit itself
        else
          report.reject(bufnr, 'cursor_moved')
        end
      end
    end,
  })
  api.nvim_create_autocmd({ 'InsertLeave', 'BufLeave' }, {
    group = group,
    buffer = bufnr,
    callback = function()
      if state[bufnr].items then
        state[bufnr].items = nil
        report.reject(bufnr, 'dismissed')
      end
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
  if state[bufnr] then
    pcall(api.nvim_del_augroup_by_name, 'hindsight_builtin_' .. bufnr)
    state[bufnr] = nil
  end
end

function M.visible(bufnr)
  local item = shown(bufnr)
  return item and lsp.item_text(item) or nil
end

--- Accept all (the built-in inserts it and runs the item's command), or a word or line of it.
function M.accept(bufnr, part)
  if not M.visible(bufnr) then
    return false
  end
  if part == 'all' then
    state[bufnr].items = nil
    report.settle(bufnr)
    return ic.get({ bufnr = bufnr })
  end
  return ic.get({
    bufnr = bufnr,
    on_accept = function(item)
      local text = type(item.insert_text) == 'string' and item.insert_text or item.insert_text.value
      local taken = piece.take(text, part)
      state[bufnr].items = nil
      piece.insert(bufnr, taken)
      if taken == text then
        report.settle(bufnr)
        lsp.exec(vim.lsp.get_client_by_id(item.client_id), item.command, bufnr)
      else
        report.partial(bufnr, vim.fn.strchars(taken))
        report.settle(bufnr) -- the built-in asks again; the server continues this suggestion
      end
    end,
  })
end

-- The built-in's per-buffer object, to ask it for suggestions with trigger kind Invoked (it has no
-- public way to); nil if a later Neovim moves it.
local function completor(bufnr)
  local ok, capability = pcall(require, 'vim.lsp._capability')
  local all = ok and type(capability.all) == 'table' and capability.all.inline_completion
  local active = all and all.active and all.active[bufnr]
  return active and type(active.request) == 'function' and active or nil
end

--- Ask now, as the user asked (the server then adds alternatives to cycle through).
function M.request(bufnr)
  local c = completor(bufnr)
  if c then
    c:request(1)
  else -- the built-in asks on any cursor event
    api.nvim_exec_autocmds('CursorMovedI', { buffer = bufnr, modeline = false })
  end
end

--- Show the next (count 1) or previous (-1) suggestion. With only one, ask for alternatives first.
function M.cycle(bufnr, count)
  local st = state[bufnr]
  if not (st and st.items) then
    return
  end
  if #st.items == 1 then
    st.cycle_after = count
    M.request(bufnr)
    return
  end
  ic.select({ bufnr = bufnr, count = count })
  st.index = (st.index - 1 + count) % #st.items + 1
  report.show(bufnr, st.client_id, st.items[st.index])
end

function M.dismiss(bufnr)
  if not M.visible(bufnr) then
    return false
  end
  state[bufnr].items = nil
  report.reject(bufnr, 'dismissed')
  return ic.get({ bufnr = bufnr, on_accept = function() end }) -- hides it without inserting
end

M.enabled = true

function M.enable(on)
  M.enabled = on
  for bufnr in pairs(state) do
    if api.nvim_buf_is_valid(bufnr) then
      ic.enable(on, { bufnr = bufnr })
    end
  end
end

return M
