-- :Hindsight status|toggle|reload (the plugin does nothing else until require('hindsight').setup{}).
vim.api.nvim_create_user_command('Hindsight', function(args)
  require('hindsight').command(args.args)
end, {
  nargs = '?',
  desc = 'hindsight: status, toggle or reload',
  complete = function(lead)
    return vim.tbl_filter(function(name)
      return vim.startswith(name, lead)
    end, { 'reload', 'status', 'toggle' })
  end,
})
