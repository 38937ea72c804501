-- Options for require('hindsight').setup{...}: defaults, and a check that names each wrong option.
local M = {}

M.defaults = {
  -- How to start the server. The default is the console script `pip install` puts on PATH.
  cmd = { 'hindsight', 'serve' },
  -- Filetypes to attach to (the server's nine languages).
  filetypes = {
    'python', 'javascript', 'javascriptreact', 'typescript', 'typescriptreact',
    'go', 'rust', 'java', 'c', 'cpp',
  },
  -- The workspace root is the nearest directory holding one of these (else the file's directory).
  root_markers = { '.git', 'pyproject.toml', 'setup.py', 'package.json', 'go.mod', 'Cargo.toml' },
  -- initializationOptions, sent as given (camelCase, see the README's table), e.g. { model = '/m.gguf' }.
  server = {},
  -- Ask for a suggestion automatically after a typing pause; false = only on request (M-\).
  auto_trigger = true,
  -- The typing pause in milliseconds (the plugin's own ghost text; Neovim's built-in waits 200 ms).
  debounce_ms = 75,
  -- nil: Neovim's built-in vim.lsp.inline_completion where it exists (0.12+), else the plugin's own
  -- ghost text. false: always the plugin's own. true: the built-in (an error where it is missing).
  builtin = nil,
  -- Insert-mode keys; set one to false to leave the key alone.
  keys = {
    accept = '<Tab>', -- the whole suggestion (Tab keeps its usual meaning when none is shown)
    accept_word = '<M-Right>',
    accept_line = '<M-C-Right>',
    next = '<M-]>', -- cycle through the suggestions
    prev = '<M-[>',
    dismiss = '<C-]>',
    trigger = '<M-\\>', -- ask now
  },
  -- Highlight of the ghost text (the plugin's own path; the built-in uses ComplHint).
  hl_group = 'HindsightSuggestion',
}

local function check(value, default, path, problems)
  if type(default) == 'table' and not vim.islist(default) then
    if type(value) ~= 'table' then
      table.insert(problems, ('%s should be a table'):format(path))
      return default
    end
    local out = vim.deepcopy(default)
    for k, v in pairs(value) do
      local where = path == '' and k or (path .. '.' .. k)
      if default[k] == nil and path ~= 'server' and not (path == '' and k == 'builtin') then
        table.insert(problems, ('unknown option %s'):format(where))
      elseif path == 'server' then
        out[k] = v
      elseif path == 'keys' and v == false then
        out[k] = false
      else
        out[k] = check(v, default[k], where, problems)
      end
    end
    return out
  end
  if path == 'builtin' then
    if value ~= nil and type(value) ~= 'boolean' then
      table.insert(problems, 'builtin should be true, false or nil')
      return nil
    end
    return value
  end
  if type(value) ~= type(default) then
    table.insert(problems, ('%s should be a %s, not a %s'):format(path, type(default), type(value)))
    return default
  end
  return value
end

--- The options, with the user's on top of the defaults, and the list of problems found.
---@return table, string[]
function M.resolve(user)
  local problems = {}
  local opts = check(user or {}, M.defaults, '', problems)
  return opts, problems
end

return M
